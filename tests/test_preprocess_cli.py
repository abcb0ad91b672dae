"""`tumor preprocess` as a user meets it: inputs found by name, bad inputs named, batches that
keep going, resume, shards, invert. Tiny 4 mm heads keep every run well under a second or two.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.io.volume import Volume, load_volume, save_volume

FAST = ["--atlas", "none", "--no-skull-strip", "--no-n4"]


def _head(shift_mm=(0.0, 0.0, 0.0), contrast: float = 1.0) -> Volume:
    """An ellipsoidal 'head' with a bright inner 'brain' on a 4 mm grid (LPS orientation)."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in (24, 24, 20)), indexing="ij")
    centre = np.array([11.5, 11.5, 9.5]) + np.array(shift_mm) / 4
    radius = (((i - centre[0]) / 9) ** 2 + ((j - centre[1]) / 10) ** 2
              + ((k - centre[2]) / 8) ** 2)
    image = 100.0 * (radius < 1) + contrast * 80.0 * (radius < 0.5) + 30.0 * (i > 14) * (radius < 1)
    affine = np.diag([-4.0, -4.0, 4.0, 1.0])
    affine[:3, 3] = [46.0, 46.0, -38.0]
    return Volume(image.astype(np.float32), affine)


def _subject(folder: Path, name: str, *, skip: str = "", four_d: str = "") -> Path:
    folder = folder / name
    folder.mkdir(parents=True)
    for number, modality in enumerate(("t1n", "t1c", "t2w", "t2f")):
        if modality == skip:
            continue
        volume = _head((number * 1.0, 0.0, 0.0), contrast=1.0 - 0.3 * number)
        if modality == four_d:
            volume = Volume(np.stack([volume.array] * 2, axis=-1), volume.affine)
        save_volume(volume, folder / f"{name}-{modality}.nii.gz")
    return folder


def _invoke(*args: str):
    return CliRunner().invoke(app, ["preprocess", *args])


@pytest.fixture
def cohort(tmp_path) -> Path:
    for name in ("S1", "S2"):
        _subject(tmp_path / "cohort", name)
    return tmp_path / "cohort"


def test_atlas_none_puts_every_modality_on_the_t1c_grid_in_ras(tmp_path):
    subject = _subject(tmp_path, "S1")
    result = _invoke("-i", str(subject), "-o", str(tmp_path / "out"), *FAST, "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == 1
    t1c = load_volume(subject / "S1-t1c.nii.gz").reoriented("RAS")
    for modality in ("t1n", "t1c", "t2w", "t2f"):
        volume = load_volume(tmp_path / "out" / "S1" / f"S1-{modality}.nii.gz")
        assert volume.orientation == "RAS" and volume.shape == t1c.shape
        assert np.allclose(volume.affine, t1c.affine)
    record = json.loads((tmp_path / "out" / "S1" / "preprocess.json").read_text())
    assert record["atlas"] is None and record["config"]["n4"] is False
    assert (tmp_path / "out" / "S1" / "transforms" / "t2f.tfm").exists()


def test_explicit_files_and_percentile_normalisation_give_0_to_1(tmp_path):
    subject = _subject(tmp_path, "in")
    result = _invoke("--t1c", str(subject / "in-t1c.nii.gz"), "--t2f",
                     str(subject / "in-t2f.nii.gz"), "-o", str(tmp_path / "out"), *FAST,
                     "--normalize", "percentile", "-q")
    assert result.exit_code == 0, result.output
    t2f = load_volume(tmp_path / "out" / "in" / "in-t2f.nii.gz").array
    assert t2f.min() >= 0 and t2f.max() <= 1 and t2f.max() > 0.99
    assert not (tmp_path / "out" / "in" / "in-t1n.nii.gz").exists()


def test_a_subject_without_flair_is_bad_input_naming_the_folder_and_modality(tmp_path):
    subject = _subject(tmp_path, "S1", skip="t2f")
    result = _invoke("-i", str(subject), "-o", str(tmp_path / "out"), *FAST)
    assert result.exit_code == 2
    assert "no t2f image found" in result.output and "S1" in result.output


def test_a_4d_flair_is_bad_input_naming_the_file(tmp_path):
    subject = _subject(tmp_path, "S1", four_d="t2f")
    result = _invoke("-i", str(subject), "-o", str(tmp_path / "out"), *FAST)
    assert result.exit_code == 2, result.output
    assert "S1-t2f.nii.gz" in result.output and "4 dimensions" in result.output
    assert not (tmp_path / "out" / "S1").exists()


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "--shard 3/2"),
    (["--jobs", "0"], "--jobs 0"),
    (["--atlas", "/nonexistent/template.nii.gz"], "no such template file"),
])
def test_bad_options_are_one_line_with_exit_code_2(cohort, tmp_path, args, message):
    result = _invoke("-i", str(cohort), "-o", str(tmp_path / "out"), *FAST[2:], *args)
    assert result.exit_code == 2 and message in result.output


def test_one_bad_subject_does_not_stop_the_batch_exit_3_then_resume_skips(cohort, tmp_path):
    _subject(cohort, "S3", four_d="t1c")
    out = tmp_path / "out"
    first = _invoke("-i", str(cohort), "-o", str(out), *FAST, "--jobs", "2", "--json", "-q")
    assert first.exit_code == 3, first.output
    assert "S3-t1c.nii.gz" in first.output
    assert (out / "S1" / "S1-t1c.nii.gz").exists() and (out / "S2" / "preprocess.json").exists()
    assert not (out / "S3").exists()
    again = _invoke("-i", str(cohort), "-o", str(out), *FAST, "--json", "-q")
    statuses = {row["subject"]: row["status"]
                for row in json.loads(again.stdout.split("\nerror")[0])["subjects"]}
    assert statuses == {"S1": "skipped", "S2": "skipped", "S3": "failed"}


def test_changed_options_on_an_existing_folder_need_overwrite(cohort, tmp_path):
    out = tmp_path / "out"
    assert _invoke("-i", str(cohort / "S1"), "-o", str(out), *FAST, "-q").exit_code == 0
    changed = _invoke("-i", str(cohort / "S1"), "-o", str(out), *FAST, "--normalize", "none")
    assert changed.exit_code == 2 and "--overwrite" in changed.output
    replaced = _invoke("-i", str(cohort / "S1"), "-o", str(out), *FAST, "--normalize", "none",
                       "--overwrite", "-q")
    assert replaced.exit_code == 0
    record = json.loads((out / "S1" / "preprocess.json").read_text())
    assert record["config"]["normalize"] == "none"


def test_shards_split_the_sorted_cohort_without_overlap(cohort, tmp_path):
    _subject(cohort, "S3")
    done = []
    for part in ("1/2", "2/2"):
        result = _invoke("-i", str(cohort), "-o", str(tmp_path / part[0]), *FAST, "--shard",
                         part, "--json", "-q")
        assert result.exit_code == 0, result.output
        done.append([row["subject"] for row in json.loads(result.stdout)["subjects"]])
    assert done == [["S1", "S3"], ["S2"]]


def test_invert_puts_a_mask_back_on_the_native_flair_grid(tmp_path):
    subject = _subject(tmp_path, "S1")
    out = tmp_path / "out"
    assert _invoke("-i", str(subject), "-o", str(out), *FAST, "-q").exit_code == 0
    t1c_out = load_volume(out / "S1" / "S1-t1c.nii.gz")
    mask = Volume((t1c_out.array > 0.5).astype(np.uint8), t1c_out.affine)
    save_volume(mask, tmp_path / "mask.nii.gz")
    result = _invoke("--invert", str(tmp_path / "mask.nii.gz"), "--record",
                     str(out / "S1" / "preprocess.json"), "--onto", "t2f", "-o",
                     str(tmp_path / "native.nii.gz"), "-q")
    assert result.exit_code == 0, result.output
    native = load_volume(tmp_path / "native.nii.gz")
    t2f = load_volume(subject / "S1-t2f.nii.gz")
    assert native.shape == t2f.shape and np.allclose(native.affine, t2f.affine)
    assert set(np.unique(native.array)) <= {0, 1} and native.array.sum() > 0


def test_invert_without_record_is_bad_input(tmp_path):
    save_volume(_head(), tmp_path / "mask.nii.gz")
    result = _invoke("--invert", str(tmp_path / "mask.nii.gz"), "-o", str(tmp_path / "n.nii.gz"))
    assert result.exit_code == 2 and "--record" in result.output


def test_real_process_reports_a_missing_modality_in_one_red_line(tmp_path):
    subject = _subject(tmp_path, "S1", skip="t1c")
    process = subprocess.run(
        [sys.executable, "-c", "from tumorcli.cli.app import main; main()", "preprocess", "-i",
         str(subject), "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert process.returncode == 2
    assert "no t1c image found" in process.stderr and len(process.stderr.strip().splitlines()) == 1


def test_seg_is_carried_with_nearest_neighbour_and_crop_is_recorded_and_inverted(tmp_path):
    subject = _subject(tmp_path, "S1")
    t1c = load_volume(subject / "S1-t1c.nii.gz")
    save_volume(Volume((t1c.array > 150).astype(np.uint8) * 3, t1c.affine),
                tmp_path / "seg.nii.gz")
    out = tmp_path / "out"
    result = _invoke("-i", str(subject), "-o", str(out), *FAST, "--seg",
                     str(tmp_path / "seg.nii.gz"), "--crop", "--crop-margin", "4", "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "S1" / "preprocess.json").read_text())
    low, high = record["crop"]["low"], record["crop"]["high"]
    seg = load_volume(out / "S1" / "S1-seg.nii.gz")
    assert seg.shape == tuple(h - l for l, h in zip(low, high))
    assert set(np.unique(seg.array)) == {0, 3}
    back = tmp_path / "seg-native.nii.gz"
    assert _invoke("--invert", str(out / "S1" / "S1-seg.nii.gz"), "--record",
                   str(out / "S1" / "preprocess.json"), "-o", str(back), "-q").exit_code == 0
    native = load_volume(back).array == 3
    truth = load_volume(tmp_path / "seg.nii.gz").array == 3
    assert 2 * (native & truth).sum() / (native.sum() + truth.sum()) > 0.9


def test_dicom_series_folders_named_by_modality_are_read_and_hashed(tmp_path):
    from tumorcli.io.dicom import write_dicom_series

    subject = tmp_path / "P1"
    subject.mkdir()
    for number, modality in enumerate(("t1n", "t1c", "t2w", "t2f")):
        head = _head((number * 1.0, 0.0, 0.0), contrast=1.0 - 0.3 * number)
        write_dicom_series(Volume(np.round(head.array).astype(np.int16), head.affine),
                           subject / f"P1-{modality}", series_description=f"{modality} axial",
                           series_number=number + 1)
    result = _invoke("-i", str(subject), "-o", str(tmp_path / "out"), *FAST, "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "P1" / "preprocess.json").read_text())
    assert record["inputs"]["t2f"]["path"].endswith("P1-t2f")
    assert len(record["inputs"]["t2f"]["sha256"]) == 64
    assert load_volume(tmp_path / "out" / "P1" / "P1-t2f.nii.gz").shape == (24, 24, 20)
