"""Every bad input, run as a real `tumor` subprocess: one red line that names the file and the
problem, exit code 2, no traceback and no output left behind."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from dicom_factory import known_stored_volume, make_slices, oblique_affine, save


def tumor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tumorcli.cli.app", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TUMOR_DEBUG": "0"})


def _assert_one_red_line(result, *expected: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _nothing_written(folder) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(("out", ".tmp"))]
    assert leftovers == []


@pytest.fixture
def good_nifti(tmp_path):
    path = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((30, 30, 30), np.float32),
                             np.eye(4)), path)
    return path


def test_missing_file(tmp_path):
    result = tumor("convert", "-i", str(tmp_path / "t1c.nii.gz"), "-o", str(tmp_path / "out.nii"))
    _assert_one_red_line(result, "t1c.nii.gz", "not found")
    _nothing_written(tmp_path)


def test_a_text_file_named_nii_gz(tmp_path):
    text = tmp_path / "notes.nii.gz"
    text.write_text("patient notes, not an image\n")
    result = tumor("convert", "-i", str(text), "-o", str(tmp_path / "out.nii.gz"))
    _assert_one_red_line(result, "notes.nii.gz", "not gzip-compressed")
    _nothing_written(tmp_path)


def test_a_truncated_nii_gz(tmp_path, good_nifti):
    truncated = tmp_path / "truncated.nii.gz"
    data = good_nifti.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    result = tumor("convert", "-i", str(truncated), "-o", str(tmp_path / "out.nii.gz"))
    _assert_one_red_line(result, "truncated.nii.gz", "truncated")
    _nothing_written(tmp_path)


def test_a_4d_file_where_3d_is_needed(tmp_path):
    four_d = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 3), np.float32), np.eye(4)), four_d)
    result = tumor("convert", "-i", str(four_d), "-o", str(tmp_path / "out.nii.gz"))
    _assert_one_red_line(result, "dwi.nii.gz", "4 dimensions", "6x6x6x3", "3D")
    _nothing_written(tmp_path)


def test_a_folder_with_two_series_and_no_series_option(tmp_path):
    stored, affine = known_stored_volume(), oblique_affine()
    save(make_slices(stored, affine, series_number=3, description="T1 pre"), tmp_path / "dicom" / "a")
    save(make_slices(stored, affine, series_number=7, description="T1 post"), tmp_path / "dicom" / "b")
    result = tumor("convert", "-i", str(tmp_path / "dicom"), "-o", str(tmp_path / "out.nii.gz"))
    line = _assert_one_red_line(result, "dicom", "T1 pre", "T1 post", "--series")
    assert "holds 2 DICOM series" in line
    _nothing_written(tmp_path)

    chosen = tumor("convert", "-i", str(tmp_path / "dicom"), "-o", str(tmp_path / "out.nii.gz"),
                   "--series", "7")
    assert chosen.returncode == 0, chosen.stderr
    assert (tmp_path / "out.nii.gz").exists()


def test_a_series_with_a_missing_slice(tmp_path):
    slices = make_slices(known_stored_volume(), oblique_affine())
    del slices[4]
    save(slices, tmp_path / "gap")
    result = tumor("convert", "-i", str(tmp_path / "gap"), "-o", str(tmp_path / "out.nii.gz"))
    _assert_one_red_line(result, "gap", "missing")
    _nothing_written(tmp_path)


def test_a_seg_without_reference_and_an_output_folder_that_is_not_empty(tmp_path, good_nifti):
    result = tumor("convert", "-i", str(good_nifti), "-o", str(tmp_path / "out.dcm"), "--to", "seg")
    _assert_one_red_line(result, "--reference")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.dcm").write_bytes(b"old")
    result = tumor("convert", "-i", str(good_nifti), "-o", str(taken), "--to", "dicom")
    _assert_one_red_line(result, "taken", "not an empty folder")
    assert [p.name for p in taken.iterdir()] == ["old.dcm"]
