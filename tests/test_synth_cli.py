"""`tumor synth-cohort` end to end on small cohorts: files, determinism, native space, DICOM,
treatments between sessions and untreated patients."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.io.volume import load_volume

runner = CliRunner()
MODALITIES = ("t1n", "t1c", "t2w", "t2f")


def make(out: Path, *args: str) -> dict:
    result = runner.invoke(app, ["synth-cohort", "-o", str(out), "--size", "small", "--json",
                                 *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    make(out, "--subjects", "1", "--sessions", "3", "--seed", "4")
    return out


def test_cohort_has_brats_files_csv_and_reports(cohort):
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))
    assert [r["session"] for r in rows] == ["000", "001", "002"][: len(rows)] and len(rows) >= 2
    for row in rows:
        name = f"{row['subject']}-{row['session']}"
        assert name.startswith("BraTS-GLI-00001-")
        for suffix in (*MODALITIES, "seg"):
            volume = load_volume(cohort / name / f"{name}-{suffix}.nii.gz")
            assert volume.shape == (96, 112, 80) and np.allclose(volume.spacing, 2.0)
        assert row["survival_class"] in ("short", "long") and int(row["survival_days"]) > 0
        report = (cohort / name / f"{name}-report.txt").read_text()
        assert ("cm³" in report or "No " in report) and "Impression" in report
    assert rows[0]["treatment"] == "none" and "chemoradiation" in rows[1]["treatment"]
    assert int(rows[1]["day"]) > int(rows[0]["day"])


def test_segmentation_matches_the_csv_and_lies_in_the_brain(cohort):
    row = next(csv.DictReader(open(cohort / "cohort.csv")))
    name = f"{row['subject']}-{row['session']}"
    seg = load_volume(cohort / name / f"{name}-seg.nii.gz")
    labels = np.asarray(seg.array)
    voxel_cm3 = seg.voxel_volume_mm3 / 1000
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert abs((labels > 0).sum() * voxel_cm3 - float(row["wt_cm3"])) < 0.01
    assert abs((labels == 3).sum() * voxel_cm3 - float(row["et_cm3"])) < 0.01
    t1c = np.asarray(load_volume(cohort / name / f"{name}-t1c.nii.gz").array)
    assert np.all(t1c[labels > 0] > 0)  # skull-stripped, but never inside the tumour
    assert t1c[labels == 3].mean() > 1.3 * t1c[(labels == 0) & (t1c > 0)].mean()  # rim enhances
    flair = np.asarray(load_volume(cohort / name / f"{name}-t2f.nii.gz").array)
    assert flair[labels == 2].mean() > 1.3 * flair[(labels == 0) & (flair > 0)].mean()


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "cohort.csv")))


def _truth(out: Path, row: dict) -> dict:
    name = f"{row['subject']}-{row['session']}"
    return json.loads((out / name / f"{name}-truth.json").read_text())


def _arrays(out: Path, row: dict) -> list[np.ndarray]:
    name = f"{row['subject']}-{row['session']}"
    return [np.asarray(load_volume(out / name / f"{name}-{suffix}.nii.gz").array)
            for suffix in ("seg", "t1c")]


def test_treatments_are_none_before_diagnosis_then_surgery_rt_tmz_at_the_first_follow_up(cohort):
    rows = _rows(cohort)
    truth = _truth(cohort, rows[1])
    resected = truth["patient"]["response"]["extent_of_resection"] > 0
    assert truth["patient"]["treated"] and rows[0]["treatments"] == "none"
    assert rows[1]["treatments"] == ("surgery+rt+tmz" if resected else "rt+tmz")
    assert truth["session"]["treatments"] == rows[1]["treatments"]
    if len(rows) > 2:
        assert rows[2]["treatments"] == "tmz"  # adjuvant cycles only


def test_untreated_fraction_0_is_the_default_cohort_byte_for_byte(cohort, tmp_path):
    make(tmp_path / "f0", "--subjects", "1", "--sessions", "3", "--seed", "4",
         "--untreated-fraction", "0")
    files = sorted(p.relative_to(cohort) for p in cohort.rglob("*") if p.is_file())
    for relative in files:
        same = (tmp_path / "f0" / relative).read_bytes() == (cohort / relative).read_bytes()
        assert same, relative
    for row in _rows(cohort):
        for default, explicit in zip(_arrays(cohort, row), _arrays(tmp_path / "f0", row)):
            assert np.array_equal(default, explicit)


def test_untreated_fraction_1_leaves_every_patient_untreated_with_the_same_parameters(
        cohort, tmp_path):
    result = make(tmp_path / "f1", "--subjects", "1", "--sessions", "2", "--seed", "4",
                  "--untreated-fraction", "1")
    assert result["untreated"] == 1
    rows = _rows(tmp_path / "f1")
    assert all(row["treatments"] == "none" and row["treatment"] == "none" for row in rows)
    untreated = _truth(tmp_path / "f1", rows[0])["patient"]
    treated = _truth(cohort, _rows(cohort)[0])["patient"]
    assert treated.pop("treated") and not untreated.pop("treated")
    assert untreated == treated  # the draw has its own generator: the patient is the same


def test_untreated_fraction_half_mixes_treated_and_untreated_patients(tmp_path):
    # seed 11: subjects 2 and 4 untreated; 1 treated with a biopsy only, 3 with a resection
    result = make(tmp_path / "mix", "--subjects", "4", "--sessions", "2", "--seed", "11",
                  "--untreated-fraction", "0.5")
    assert json.loads((tmp_path / "mix" / "cohort.json").read_text()
                      )["config"]["untreated_fraction"] == 0.5
    rows = _rows(tmp_path / "mix")
    treated = {row["subject"]: _truth(tmp_path / "mix", row)["patient"]["treated"]
               for row in rows if row["session"] == "000"}
    assert sorted(treated.values()) == [False, False, True, True]
    assert result["untreated"] == 2
    surgery_seen = set()
    for row in rows:
        truth = _truth(tmp_path / "mix", row)
        if row["session"] == "000" or not treated[row["subject"]]:
            assert row["treatments"] == "none", row
            continue
        resected = truth["patient"]["response"]["extent_of_resection"] > 0
        assert row["treatments"] == ("surgery+rt+tmz" if resected else "rt+tmz"), row
        surgery_seen.add(resected)
    assert surgery_seen == {False, True}  # a biopsy is not surgery


def test_same_seed_gives_identical_files_whatever_the_jobs(tmp_path):
    make(tmp_path / "a", "--subjects", "2", "--sessions", "1", "--seed", "9", "--jobs", "1")
    make(tmp_path / "b", "--subjects", "2", "--sessions", "1", "--seed", "9", "--jobs", "2")
    make(tmp_path / "c", "--subjects", "1", "--sessions", "1", "--seed", "10")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) == 2 + 2 * 7
    for relative in files:
        same = (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
        assert same, relative
    first = "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz"
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "c" / first).read_bytes()


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    mask = (a > 0) & (b > 0)
    x, y = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def test_native_transforms_map_native_voxels_onto_atlas_voxels_within_1_mm(tmp_path):
    """Resample each native scan to the atlas with the json's voxel map and find the shift that
    best aligns it with the same subject's atlas-space scan: it must be under 1 mm."""
    make(tmp_path / "native", "--space", "native", "--subjects", "1", "--sessions", "1")
    make(tmp_path / "atlas", "--skull", "--subjects", "1", "--sessions", "1")
    name = "BraTS-GLI-00001-000"
    truth = json.loads((tmp_path / "native" / name / f"{name}-transforms.json").read_text())
    atlas_affine = np.array(truth["atlas_affine"])
    reference = sitk.Image([int(n) for n in truth["atlas_shape"]], sitk.sitkFloat32)
    for modality in MODALITIES:
        native = load_volume(tmp_path / "native" / name / f"{name}-{modality}.nii.gz")
        atlas = np.asarray(load_volume(tmp_path / "atlas" / name / f"{name}-{modality}.nii.gz")
                           .array, np.float32)
        assert native.shape != atlas.shape
        to_native_voxel = np.linalg.inv(np.array(
            truth["modalities"][modality]["native_voxel_to_atlas_voxel"]))
        image = sitk.GetImageFromArray(np.asarray(native.array, np.float32).transpose(2, 1, 0))
        scores = {}
        for axis in range(3):
            for shift_mm in np.arange(-2.0, 2.01, 0.5):
                shift = np.eye(4)
                shift[:3, 3] = np.linalg.inv(atlas_affine[:3, :3]) @ np.eye(3)[axis] * shift_mm
                transform = sitk.AffineTransform(3)  # index space on both sides
                matrix = to_native_voxel @ shift
                transform.SetMatrix(matrix[:3, :3].ravel().tolist())
                transform.SetTranslation(matrix[:3, 3].tolist())
                moved = sitk.Resample(image, reference, transform, sitk.sitkLinear, 0.0)
                moved_array = sitk.GetArrayFromImage(moved).transpose(2, 1, 0)
                scores[axis, shift_mm] = _ncc(moved_array, atlas)
        assert scores[0, 0.0] > 0.8, (modality, scores[0, 0.0])
        for axis in range(3):
            best = max((s for a, s in scores if a == axis), key=lambda s: scores[axis, s])
            assert abs(best) <= 1.0, (modality, axis, best)


def test_native_dicom_series_carry_the_scanner_geometry(tmp_path):
    from tumorcli.io.dicom import read_dicom_series

    make(tmp_path / "dcm", "--space", "native", "--dicom", "--subjects", "1", "--sessions", "1")
    name = "BraTS-GLI-00001-000"
    truth = json.loads((tmp_path / "dcm" / name / f"{name}-transforms.json").read_text())
    for modality in MODALITIES:
        series = read_dicom_series(tmp_path / "dcm" / name / f"{name}-{modality}")
        volume = series.volume
        written = np.array(truth["modalities"][modality]["native_affine"])
        centre = written[:3, :3] @ ((np.array(truth["modalities"][modality]["shape"]) - 1) / 2)
        read_centre = volume.affine[:3, :3] @ ((np.array(volume.shape) - 1) / 2)
        assert np.allclose(written[:3, 3] + centre, volume.affine[:3, 3] + read_centre, atol=0.01)
        assert sorted(volume.shape) == sorted(truth["modalities"][modality]["shape"])


@pytest.mark.parametrize("args, words", [
    (["--subjects", "0"], "--subjects"),
    (["--sessions", "0"], "--sessions"),
    (["--dicom"], "--space native"),
    (["--jobs", "0"], "--jobs"),
    (["--untreated-fraction", "-0.1"], "--untreated-fraction"),
    (["--untreated-fraction", "1.5"], "--untreated-fraction"),
    (["--untreated", "--untreated-fraction", "0.5"], "give one of them"),
])
def test_bad_options_are_bad_input_with_a_hint(tmp_path, args, words):
    result = runner.invoke(app, ["synth-cohort", "-o", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert words in result.output and "Hint" in result.output
    assert not (tmp_path / "x").exists()
