"""Rigid co-registration from hard poses (issue 22): a T2w/FLAIR/T1n rotated up to ±20° per
axis, shifted up to ±30 mm, with 1–6 mm slices or a slab over 60 % of the head, lands within
1 mm (mean, 2 mm max) of the true transform; a scan the search cannot align is flagged.

One small synthetic head (skull on, 3 mm grid) serves every test; the scans are cut from its
noise-free images in known poses (`tumorcli.synth.native.posed_scan`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.io.volume import Volume, save_volume
from tumorcli.preprocess import alignment, quality, spatial
from tumorcli.synth.grid import atlas_grid
from tumorcli.synth.heads import synthetic_head
from tumorcli.synth.native import pose_cases, posed_scan

VOXEL_MM = 3.0
FAST = ["--atlas", "none", "--no-skull-strip", "--no-n4"]


@pytest.fixture(scope="module", autouse=True)
def one_itk_thread():
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _head(seed: int) -> dict:
    head = synthetic_head(seed, atlas_grid(VOXEL_MM, (64, 75, 54)))
    return {"grid": head.grid, "clean": head.clean, "white": head.white,
            "t1c": Volume(head.t1c, head.grid.affine),
            "brain": quality.points_of(head.brain, head.grid.affine, step=2)}


@pytest.fixture(scope="module")
def head() -> dict:
    return _head(seed=1)


def _scan(head: dict, modality: str, pose, slice_mm: float = 3.0, slab: float = 1.0,
          slab_centre_mm: float = 0.0, seed: int = 0) -> tuple[Volume, np.ndarray]:
    rng = np.random.default_rng([seed, 11])
    return posed_scan(head["clean"][modality], head["grid"], pose, slice_mm, VOXEL_MM,
                      head["white"][modality], rng, slab, slab_centre_mm)


def _errors_mm(t1c_to_native: np.ndarray, native_to_atlas: np.ndarray,
               brain: np.ndarray) -> np.ndarray:
    """Distances (mm) between where we and the truth put the T1c's brain points."""
    truth = quality.apply(np.linalg.inv(native_to_atlas), brain)
    return np.linalg.norm(quality.apply(t1c_to_native, brain) - truth, axis=1)


def test_20_random_poses_up_to_20_degrees_30_mm_and_6_mm_slices_land_within_1_mm(head):
    fixed = spatial.volume_to_sitk(head["t1c"])
    report = []
    for number, case in enumerate(pose_cases(20, seed=22, slab_centre_mm=10.0)):
        scan, native_to_atlas = _scan(head, case["modality"], case["pose"], case["slice_mm"],
                                      case["slab"], case["slab_centre_mm"], seed=number)
        transform, check = alignment.register_rigid(
            fixed, spatial.volume_to_sitk(scan.reoriented("RAS")))
        errors = _errors_mm(spatial.ras_matrix(transform), native_to_atlas, head["brain"])
        report.append((case, errors.mean(), errors.max(), check.ok))
    bad = [r for r in report if not (r[1] < 1.0 and r[2] < 2.0 and r[3])]
    assert not bad, "\n".join(f"{c['modality']} {np.round(c['pose'], 1)} slice {c['slice_mm']} "
                              f"slab {c['slab']}: {mean:.2f}/{largest:.2f} mm, gate {ok}"
                              for c, mean, largest, ok in bad)


def _write_subject(head: dict, folder, scans: dict) -> tuple[list[str], dict]:
    """T1c + the given scans as NIfTI in `folder`: (the CLI's file options, each scan's
    native_to_atlas)."""
    folder.mkdir(parents=True)
    options, truth = ["--subject", folder.name], {}
    for modality, (scan, native_to_atlas) in {"t1c": (head["t1c"], np.eye(4)), **scans}.items():
        path = folder / f"{folder.name}-{modality}.nii.gz"
        save_volume(scan, path)
        options += [f"--{modality}", str(path)]
        truth[modality] = native_to_atlas
    return options, truth


def test_tumor_preprocess_aligns_a_rotated_shifted_thick_slice_flair_and_says_done(head,
                                                                                   tmp_path):
    scans = {"t2f": _scan(head, "t2f", (7, -5, 9, 6, -4, 5), slice_mm=6.0),
             "t2w": _scan(head, "t2w", (-15, 12, -18, -25, 20, 10), slice_mm=4.0, seed=1)}
    options, truth = _write_subject(head, tmp_path / "S1", scans)
    del truth["t1c"]
    result = CliRunner().invoke(app, ["preprocess", *options, "-o",
                                      str(tmp_path / "out"), *FAST, "--json", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["subjects"][0]["status"] == "done" and summary["warned"] == 0
    record = json.loads((tmp_path / "out" / "S1" / "preprocess.json").read_text())
    assert record["warnings"] == [] and record["coregistration_check"]["t2f"]["ok"]
    for modality, native_to_atlas in truth.items():
        errors = _errors_mm(np.array(record["transforms"][modality]["t1c_to_native_ras"]),
                            native_to_atlas, head["brain"])
        assert errors.mean() < 1.0 and errors.max() < 2.0, (modality, errors.mean())


@pytest.fixture(scope="module")
def flipped(head, tmp_path_factory):
    """A subject whose FLAIR lies upside down (170° about the left–right axis)."""
    folder = tmp_path_factory.mktemp("flipped") / "S2"
    options, _ = _write_subject(head, folder, {"t2f": _scan(head, "t2f", (170, 0, 0, 0, 0, 0))})
    return options


def test_an_upside_down_flair_is_written_with_a_warning_and_exit_code_3(flipped, tmp_path):
    result = CliRunner().invoke(app, ["preprocess", *flipped, "-o", str(tmp_path / "out"),
                                      *FAST, "--json"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout.split("\nerror")[0])
    assert summary["warned"] == 1 and summary["subjects"][0]["warnings"]
    assert summary["subjects"][0]["status"] == "done"  # written, but flagged
    record = json.loads((tmp_path / "out" / "S2" / "preprocess.json").read_text())
    assert [w.split()[0] for w in record["warnings"]] == ["t2f"], record["coregistration_check"]
    assert not record["coregistration_check"]["t2f"]["ok"]
    assert record["coregistration_check"]["t2f"]["wide_retry"]


def test_with_strict_a_misaligned_scan_is_a_red_error_and_nothing_is_written(flipped,
                                                                            tmp_path):
    result = CliRunner().invoke(app, ["preprocess", *flipped, "-o", str(tmp_path / "out"),
                                      *FAST, "--strict"])
    assert result.exit_code == 1, result.output
    assert "may be misaligned" in result.output and "S2" in result.output
    assert not (tmp_path / "out" / "S2").exists()
    assert not list((tmp_path / "out").glob(".*"))
