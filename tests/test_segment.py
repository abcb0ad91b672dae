"""`tumor segment`: labels on the input's own grid, any orientation and spacing, cohorts with
skip/resume and partial failure, DICOM in and DICOM SEG out, and one red line for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from seg_factory import MODALITIES, subject_arrays, write_subject
from tumorcli.cli.app import app
from tumorcli.infer.prepare import prepare
from tumorcli.io.volume import Volume, load_volume

runner = CliRunner()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def run(*args: str):
    return runner.invoke(app, ["segment", *args])


def labels_in(folder) -> list[str]:
    """The label files of a cohort run (beside them: their .json records and logs/)."""
    return sorted(p.name for p in folder.glob("*.nii.gz"))


def test_labels_land_on_an_oblique_1mm_ras_grid_with_its_affine(tiny_segmenter, tmp_path):
    model, _ = tiny_segmenter
    # The same kind of subject as in training, but at 1.5 mm, RAS axes and rotated 10°.
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * 1.5
    shape = (64, 64, 54)
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    case = write_subject(tmp_path, "oblique", seed=99, shape=shape, affine=affine)
    out = tmp_path / "seg.nii.gz"
    result = run("-i", str(case), "-o", str(out), "--model", str(model), "--probabilities",
                 str(tmp_path / "prob.nii.gz"), "--json")
    assert result.exit_code == 0, result.output
    seg = load_volume(out)
    assert seg.shape == shape and np.allclose(seg.affine, affine, atol=1e-5)
    assert seg.array.dtype == np.uint8 and set(np.unique(seg.array)) <= {0, 1, 2, 3}
    truth = load_volume(case / "oblique-seg.nii.gz").array
    assert dice(seg.array > 0, truth > 0) > 0.75
    probabilities = load_volume(tmp_path / "prob.nii.gz", ndim=4)
    assert probabilities.shape == (*shape, 3)
    assert 0 <= probabilities.array.min() and probabilities.array.max() <= 1
    row = json.loads(result.stdout)["subjects"][0]
    wt_cm3 = (seg.array > 0).sum() * 1.5 ** 3 / 1000
    assert row["status"] == "done" and row["volumes_cm3"]["WT"] == pytest.approx(wt_cm3)


def test_explicit_files_tta_and_the_same_seed_give_the_same_labels(tiny_segmenter, seg_cohort,
                                                                    tmp_path):
    model, _ = tiny_segmenter
    case = sorted(p for p in seg_cohort.iterdir() if p.is_dir())[0]
    files = [arg for m in MODALITIES for arg in (f"--{m}", str(case / f"{case.name}-{m}.nii.gz"))]
    for name in ("a", "b"):
        result = run(*files, "-o", str(tmp_path / f"{name}.nii.gz"), "--model", str(model),
                     "--tta", "--seed", "3", "-q")
        assert result.exit_code == 0, result.output
    a, b = (load_volume(tmp_path / f"{n}.nii.gz").array for n in "ab")
    assert np.array_equal(a, b)


def test_a_cohort_is_segmented_resumed_and_a_broken_subject_is_a_partial_batch(
        tiny_segmenter, tmp_path):
    model, _ = tiny_segmenter
    cohort = tmp_path / "cohort"
    for index in range(3):
        write_subject(cohort, f"S{index}", seed=200 + index)
    out = tmp_path / "out"
    first = run("-i", str(cohort), "-o", str(out), "--model", str(model), "--json")
    assert first.exit_code == 0, first.output
    assert labels_in(out) == [f"S{i}-seg.nii.gz" for i in range(3)]
    (out / "S1-seg.nii.gz").unlink()
    again = json.loads(run("-i", str(cohort), "-o", str(out), "--model", str(model),
                           "--json").stdout)
    assert [row["status"] for row in again["subjects"]] == ["skipped", "done", "skipped"]
    # S2's FLAIR moves off the grid: S2 fails, the others are done, exit code 3
    flair = cohort / "S2" / "S2-t2f.nii.gz"
    image = nib.load(flair)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:-2], image.affine), flair)
    result = run("-i", str(cohort), "-o", str(tmp_path / "out2"), "--model", str(model))
    assert result.exit_code == 3
    assert "1 of 3 subjects failed" in result.output and "S2-t2f.nii.gz" in result.output
    assert labels_in(tmp_path / "out2") == ["S0-seg.nii.gz", "S1-seg.nii.gz"]


def test_a_shard_takes_every_nth_subject(tiny_segmenter, tmp_path):
    model, _ = tiny_segmenter
    for index in range(3):
        write_subject(tmp_path / "cohort", f"S{index}", seed=300 + index, shape=(32, 32, 32))
    result = run("-i", str(tmp_path / "cohort"), "-o", str(tmp_path / "out"), "--model",
                 str(model), "--shard", "2/2", "-q")
    assert result.exit_code == 0, result.output
    assert labels_in(tmp_path / "out") == ["S1-seg.nii.gz"]


def test_dicom_series_in_and_a_dicom_seg_out_match_the_nifti_labels(tiny_segmenter, tmp_path):
    from tumorcli.io.dicom import write_dicom_series
    from tumorcli.io.dicom_seg import read_dicom_seg

    model, _ = tiny_segmenter
    case = write_subject(tmp_path, "case", seed=7)
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    for modality in MODALITIES:
        volume = load_volume(case / f"case-{modality}.nii.gz")
        rounded = volume.with_array(np.rint(volume.array).astype(np.int16))
        write_dicom_series(rounded, dicom / modality, series_description=modality.upper())
        nib.save(nib.Nifti1Image(rounded.array, volume.affine), case / f"case-{modality}.nii.gz")
    result = run("-i", str(dicom), "-o", str(tmp_path / "seg.dcm"), "--to", "seg", "--model",
                 str(model))
    assert result.exit_code == 0, result.output
    from_nifti = run("-i", str(case), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(model))
    assert from_nifti.exit_code == 0
    seg = read_dicom_seg(tmp_path / "seg.dcm", dicom / "t1c")
    nifti = load_volume(tmp_path / "seg.nii.gz")
    assert np.array_equal(seg.reoriented("RAS").array, nifti.reoriented("RAS").array)


def test_inputs_are_resampled_reoriented_and_zscored_in_the_brain():
    affine = np.diag([1.0, 1.0, 1.0, 1.0])  # RAS, 1 mm
    images, _ = subject_arrays(affine, (40, 40, 30), np.random.default_rng(0))
    volumes = {m: Volume(a, affine) for m, a in images.items()}
    prepared = prepare(volumes, MODALITIES, 2.0)
    assert prepared.grid.shape == (20, 20, 15)
    assert np.allclose(np.diag(prepared.grid.affine)[:3], [-2, -2, 2])  # LPS
    for channel in prepared.image:
        inside = channel[prepared.brain]
        assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3
        assert not channel[~prepared.brain].any()


@pytest.mark.parametrize("make, message", [
    ("off_grid", "the t2f image is not on the t1n grid"),
    ("head", "not skull-stripped"),
])
def test_inputs_the_net_cannot_use_are_named(tiny_segmenter, tmp_path, make, message):
    model, _ = tiny_segmenter
    case = write_subject(tmp_path, "bad", seed=1, shape=(32, 32, 32))
    path = case / "bad-t2f.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    if make == "off_grid":
        nib.save(nib.Nifti1Image(data, image.affine @ np.diag([1, 1, 1.2, 1])), path)
    else:
        for modality in MODALITIES:
            file = case / f"bad-{modality}.nii.gz"
            nib.save(nib.Nifti1Image(np.asarray(nib.load(file).dataobj) + 5, image.affine), file)
    result = run("-i", str(case), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(model))
    assert result.exit_code == 2 and message in result.output, result.output
    assert "tumor preprocess" in result.output and not (tmp_path / "seg.nii.gz").exists()


@pytest.mark.parametrize("args, message", [
    ([], "-o/--output is missing"),
    (["-o", "x.dcm"], "a .dcm output needs --to seg"),
    (["-o", "x.nii.gz", "--overlap", "1.5"], "--overlap 1.5: outside 0–0.9"),
    (["-o", "x.nii.gz", "--model", "no-such-model"], "--model no-such-model: no such model"),
    (["-o", "x.nii.gz", "--shard", "3/2"], "--shard 3/2: expected I/N"),
    (["-o", "out", "--probabilities", "p.nii.gz"], "--probabilities needs one subject"),
])
def test_bad_options_are_one_red_line_and_exit_2(seg_cohort, tmp_path, args, message):
    case = sorted(p for p in seg_cohort.iterdir() if p.is_dir())[0]
    result = runner.invoke(app, ["segment", "-i", str(case), *[
        str(tmp_path / a) if a.endswith((".gz", ".dcm")) or a == "out" else a for a in args]])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_cohort_into_one_file_and_nifti_input_to_dicom_seg_are_refused(tiny_segmenter,
                                                                         seg_cohort, tmp_path):
    model, _ = tiny_segmenter
    result = run("-i", str(seg_cohort), "-o", str(tmp_path / "one.nii.gz"), "--model", str(model))
    assert result.exit_code == 2 and "give an output folder" in result.output
    case = sorted(p for p in seg_cohort.iterdir() if p.is_dir())[0]
    result = run("-i", str(case), "-o", str(tmp_path / "s.dcm"), "--to", "seg", "--model",
                 str(model))
    assert result.exit_code == 2 and "needs the T1c as a DICOM series folder" in result.output


def test_segment_as_a_real_subprocess_writes_labels_and_no_traceback(tiny_segmenter, seg_cohort,
                                                                     tmp_path):
    model, _ = tiny_segmenter
    case = sorted(p for p in seg_cohort.iterdir() if p.is_dir())[-1]
    env = {**os.environ, "TUMOR_DEBUG": "0"}
    done = subprocess.run([sys.executable, "-m", "tumorcli.cli.app", "segment", "-i", str(case),
                           "-o", str(tmp_path / "seg.nii.gz"), "--model", str(model), "-q"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert load_volume(tmp_path / "seg.nii.gz").shape == (48, 48, 40)
    bad = subprocess.run([sys.executable, "-m", "tumorcli.cli.app", "segment", "-i",
                          str(tmp_path / "missing"), "-o", str(tmp_path / "x.nii.gz")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "missing: not found" in bad.stderr
