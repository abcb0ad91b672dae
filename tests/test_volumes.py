"""`tumor volumes`: cm³ per region on any grid, the CSV contract, and RANO-style responses."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.metrics.regions import parse_labels
from tumorcli.metrics.volumes import region_volumes, response

runner = CliRunner()
SPHERE_10MM_CM3 = 4 / 3 * np.pi * 10.0 ** 3 / 1000  # 4.18879 cm³


def tumor(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "tumorcli.cli.app", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TUMOR_DEBUG": "0"})


def save_mask(path: Path, labels: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, np.eye(4) if affine is None else affine), path)
    return path


def sphere_mask(affine: np.ndarray, shape, radius_mm: float, label: int = 3) -> np.ndarray:
    """Voxels whose centre lies within `radius_mm` of world (0, 0, 0); (X, Y, Z) uint8."""
    indices = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ indices + affine[:3, 3:]  # (3, N) mm
    inside = (world ** 2).sum(axis=0) <= radius_mm ** 2
    return np.where(inside, label, 0).astype(np.uint8).reshape(shape)


def centred_affine(linear: np.ndarray, shape) -> np.ndarray:
    """Affine with the given 3×3 part whose grid centre sits at world (0, 0, 0)."""
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ ((np.array(shape) - 1) / 2)
    return affine


def rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def test_volume_of_a_10mm_radius_sphere_is_4_19_cm3(tmp_path):
    # 0.2 mm voxels: the voxelised sphere is within 0.1 % of 4/3·π·10³ mm³.
    shape = (104, 104, 104)
    affine = centred_affine(np.diag([0.2, 0.2, 0.2]), shape)
    path = save_mask(tmp_path / "sphere-seg.nii.gz", sphere_mask(affine, shape, 10.0), affine)
    volumes = region_volumes(path, parse_labels())
    assert volumes["ET"][1] == pytest.approx(SPHERE_10MM_CM3, rel=1e-3)
    assert round(volumes["ET"][1], 2) == 4.19
    assert volumes["TC"] == volumes["WT"] == volumes["ET"] and volumes["SNFH"] == (0, 0.0)


def test_volume_is_right_on_an_oblique_anisotropic_grid(tmp_path):
    # Rotated 35° about an oblique axis, voxels 0.4 × 0.55 × 0.8 mm: the world-space sphere's
    # analytic volume within 1 %, and exactly voxels × |det| from the stored affine.
    spacing, shape = np.array([0.4, 0.55, 0.8]), (64, 48, 34)
    affine = centred_affine(rotation((1, 2, 3), 35) @ np.diag(spacing), shape)
    path = save_mask(tmp_path / "oblique-seg.nii.gz", sphere_mask(affine, shape, 10.0), affine)
    voxels, cm3 = region_volumes(path, parse_labels())["WT"]
    stored = nib.load(path).affine
    assert abs(stored[0, 1]) > 0.1  # really oblique on disk
    assert cm3 == pytest.approx(voxels * abs(np.linalg.det(stored[:3, :3])) / 1000, rel=1e-12)
    assert cm3 == pytest.approx(SPHERE_10MM_CM3, rel=0.01)
    assert voxels * spacing.prod() / 1000 == pytest.approx(cm3, rel=1e-5)


def test_flipping_and_permuting_axes_changes_no_volume(tmp_path):
    labels = np.zeros((20, 30, 12), np.uint8)
    labels[3:9, 4:20, 2:7] = 2
    labels[5:7, 6:10, 3:5] = 3
    affine = np.diag([0.9, 1.1, 3.0, 1.0])
    flipped = np.array([[0, -1.1, 0, 5], [0, 0, 3.0, -2], [-0.9, 0, 0, 7], [0, 0, 0, 1]])
    first = region_volumes(save_mask(tmp_path / "a.nii.gz", labels, affine), parse_labels())
    second = region_volumes(save_mask(tmp_path / "b.nii.gz", labels, flipped), parse_labels())
    assert first.keys() == second.keys()
    for region, (voxels, cm3) in first.items():
        assert second[region][0] == voxels and second[region][1] == pytest.approx(cm3)


def test_csv_has_exactly_the_columns_and_tc_wt_are_built_from_the_labels(tmp_path):
    labels = np.zeros((10, 10, 10), np.uint8)
    labels.flat[:7] = 1
    labels.flat[7:18] = 2
    labels.flat[18:31] = 3
    affine = np.diag([2.0, 2.0, 2.5, 1.0])  # 10 mm³ voxels
    mask = save_mask(tmp_path / "BraTS-GLI-00001-000-seg.nii.gz", labels, affine)
    result = runner.invoke(app, ["volumes", str(mask), "-o", str(tmp_path / "volumes.csv")])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "volumes.csv", newline="") as handle:
        header = handle.readline().strip()
        handle.seek(0)
        rows = {row["region"]: row for row in csv.DictReader(handle)}
    assert header == "file,region,voxels,volume_cm3"
    assert {r: int(rows[r]["voxels"]) for r in rows} == \
        {"NETC": 7, "SNFH": 11, "ET": 13, "TC": 20, "WT": 31}
    assert float(rows["TC"]["volume_cm3"]) == pytest.approx(0.2)
    assert rows["WT"]["file"] == str(mask)


def test_volumes_json_output_as_a_real_subprocess(tmp_path):
    labels = np.zeros((8, 8, 8), np.int16)
    labels[:2] = 4
    mask = save_mask(tmp_path / "old-seg.nii.gz", labels)
    result = tumor("volumes", str(mask), "--labels", "1=NETC,2=ED,4=ET", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["region"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["ET"]["voxels"] == 128 and rows["ET"]["volume_cm3"] == pytest.approx(0.128)


# RANO-style responses: ET change ≥ +25 % progression, ≤ −50 % partial response, none left
# complete response, else stable; a baseline without ET: any ET → progression, else stable.

@pytest.mark.parametrize("baseline, follow_up, expected", [
    (10.0, 12.5, "progression"), (10.0, 12.4, "stable"), (10.0, 5.0, "partial response"),
    (10.0, 5.1, "stable"), (10.0, 0.0, "complete response"), (10.0, 0.001, "partial response"),
    (0.0, 0.0, "stable"), (0.0, 0.01, "progression")])
def test_rano_style_response(baseline, follow_up, expected):
    assert response(baseline, follow_up) == expected


def test_progression_is_judged_against_the_nadir_and_response_against_baseline():
    assert response(10.0, 4.0, nadir_et_cm3=2.0) == "progression"  # −60 % vs baseline, 2× nadir
    assert response(10.0, 3.0, nadir_et_cm3=0.0) == "progression"  # recurrence after CR
    assert response(10.0, 2.4, nadir_et_cm3=2.0) == "partial response"
    assert response(10.0, 0.0, nadir_et_cm3=0.0) == "complete response"


def test_a_recurrence_after_complete_response_is_progression_in_the_course(tmp_path):
    subject = tmp_path / "BraTS-GLI-00009"
    for name, et in (("BraTS-GLI-00009-000", 1000), ("BraTS-GLI-00009-001", 0),
                     ("BraTS-GLI-00009-002", 300)):
        _session(subject, name, et_voxels=et)
    result = runner.invoke(app, ["volumes", "--subject", str(subject), "--json"])
    assert result.exit_code == 0, result.output
    assert [s["response"] for s in json.loads(result.stdout)["sessions"]] == [
        "baseline", "complete response", "progression"]


def _session(folder: Path, name: str, et_voxels: int, snfh_voxels: int = 200) -> None:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels.flat[:snfh_voxels] = 2
    labels.flat[snfh_voxels:snfh_voxels + et_voxels] = 3
    save_mask(folder / name / f"{name}-seg.nii.gz", labels)


def test_a_three_session_subject_gets_changes_days_and_responses(tmp_path):
    subject = tmp_path / "cohort" / "BraTS-GLI-00007"
    _session(subject, "BraTS-GLI-00007-000", et_voxels=1000)
    _session(subject, "BraTS-GLI-00007-001", et_voxels=400)   # −60 %
    _session(subject, "BraTS-GLI-00007-002", et_voxels=1300)  # +30 %
    (tmp_path / "cohort" / "cohort.csv").write_text(
        "subject,session,day,treatment\nBraTS-GLI-00007,000,0,none\n"
        "BraTS-GLI-00007,001,91,RT\nBraTS-GLI-00007,002,184,TMZ\n")
    result = runner.invoke(app, ["volumes", "--subject", str(subject), "--json",
                                 "-o", str(tmp_path / "course.csv")])
    assert result.exit_code == 0, result.output
    sessions = json.loads(result.stdout)["sessions"]
    assert [s["session"] for s in sessions] == ["000", "001", "002"]
    assert [s["day"] for s in sessions] == [0, 91, 184]
    assert [s["response"] for s in sessions] == ["baseline", "partial response", "progression"]
    assert [s["et_change_pct"] for s in sessions] == pytest.approx([0.0, -60.0, 30.0])
    assert sessions[1]["et_cm3"] == pytest.approx(0.4)
    assert sessions[1]["wt_cm3"] == pytest.approx(0.6)
    with open(tmp_path / "course.csv", newline="") as handle:
        assert [row["response"] for row in csv.DictReader(handle)][2] == "progression"


def test_a_folder_of_session_files_and_a_baseline_without_et(tmp_path):
    for name, et in (("BraTS-GLI-00002-000", 0), ("BraTS-GLI-00002-001", 0),
                     ("BraTS-GLI-00002-002", 50)):
        _session(tmp_path / "sessions", name, et_voxels=et)
    for path in (tmp_path / "sessions").glob("*/*-seg.nii.gz"):
        path.rename(tmp_path / "sessions" / path.name)
    result = runner.invoke(app, ["volumes", "--subject", str(tmp_path / "sessions"), "--json"])
    assert result.exit_code == 0, result.output
    sessions = json.loads(result.stdout)["sessions"]
    assert [s["response"] for s in sessions] == ["baseline", "stable", "progression"]
    assert sessions[2]["et_change_pct"] is None and sessions[2]["day"] is None


def test_a_probability_map_is_bad_input_naming_the_file(tmp_path):
    mask = save_mask(tmp_path / "prob-seg.nii.gz", np.full((6, 6, 6), 0.7, np.float32))
    result = tumor("volumes", str(mask))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "prob-seg.nii.gz: not a label mask" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_one_bad_mask_in_a_batch_is_a_partial_batch_and_the_rest_is_written(tmp_path):
    good = save_mask(tmp_path / "good-seg.nii.gz", np.ones((4, 4, 4), np.uint8))
    bad = save_mask(tmp_path / "bad-seg.nii.gz", np.full((4, 4, 4), 7, np.uint8))
    result = runner.invoke(app, ["volumes", str(good), str(bad), "-o", str(tmp_path / "v.csv")])
    assert result.exit_code == 3
    assert "bad-seg.nii.gz: holds label value(s) 7" in result.output
    with open(tmp_path / "v.csv", newline="") as handle:
        assert {row["file"] for row in csv.DictReader(handle)} == {str(good)}


def test_no_masks_and_a_wrong_output_suffix_are_bad_input(tmp_path):
    assert runner.invoke(app, ["volumes"]).exit_code == 2
    mask = save_mask(tmp_path / "m.nii.gz", np.ones((2, 2, 2), np.uint8))
    result = runner.invoke(app, ["volumes", str(mask), "-o", str(tmp_path / "v.txt")])
    assert result.exit_code == 2 and "v.txt" in result.output


def test_json_file_output_holds_one_object_per_row(tmp_path):
    mask = save_mask(tmp_path / "m-seg.nii.gz", np.full((3, 3, 3), 2, np.uint8))
    result = runner.invoke(app, ["volumes", str(mask), "-o", str(tmp_path / "v.json"), "-q"])
    assert result.exit_code == 0 and result.output == ""
    rows = json.loads((tmp_path / "v.json").read_text())
    assert [row["region"] for row in rows] == ["NETC", "SNFH", "ET", "TC", "WT"]
    assert rows[1] == {"file": str(mask), "region": "SNFH", "voxels": 27, "volume_cm3": 0.027}


def test_a_synthetic_cohort_folder_with_several_subjects_and_its_own_cohort_csv(tmp_path):
    # The layout `tumor synth-cohort` writes: OUT/<subject>-<session>/…-seg.nii.gz, OUT/cohort.csv
    for name, et in (("BraTS-GLI-00001-000", 100), ("BraTS-GLI-00001-001", 0),
                     ("BraTS-GLI-00002-000", 100), ("BraTS-GLI-00002-001", 80)):
        _session(tmp_path, name, et_voxels=et)
    (tmp_path / "cohort.csv").write_text("subject,session,day\nBraTS-GLI-00001,000,0\n"
                                         "BraTS-GLI-00001,001,60\nBraTS-GLI-00002,000,0\n"
                                         "BraTS-GLI-00002,001,75\n")
    result = runner.invoke(app, ["volumes", "--subject", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    sessions = json.loads(result.stdout)["sessions"]
    assert [(s["subject"][-5:], s["day"], s["response"]) for s in sessions] == [
        ("00001", 0, "baseline"), ("00001", 60, "complete response"),
        ("00002", 0, "baseline"), ("00002", 75, "stable")]
