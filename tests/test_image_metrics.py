"""PSNR and SSIM of predicted MR images (`metrics.image`) and `tumor evaluate-image`: the maths
against closed forms, MONAI and a float64 oracle; masks and slices; the CSV contract."""

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
import torch
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.metrics.image import (gaussian_window, image_scores, local_moments,
                                    percentile_normalised, psnr,
                                    slice_mean, ssim, ssim_map)
from tumorcli.metrics.image_evaluation import COLUMNS, image_case_id

runner = CliRunner()
HEADER = ("case,psnr_3d,ssim_3d,psnr_slices,ssim_slices,psnr_3d_brain,ssim_3d_brain,"
          "psnr_slices_brain,ssim_slices_brain")


def smooth(shape, seed: int, sigma: float = 2.0) -> np.ndarray:
    """Smooth random image scaled to [0, 1] (float64)."""
    image = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return (image - image.min()) / (image.max() - image.min())


def degraded(image: np.ndarray, seed: int, amount: float = 0.05) -> np.ndarray:
    noise = gaussian_filter(np.random.default_rng(seed).standard_normal(image.shape), 1.0)
    return image + amount * noise / noise.std()


def as_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image))[None, None]  # (B, C, *spatial)


def ball(shape, centre, radius: float) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


# ---- the maths -------------------------------------------------------------------------------

def test_identical_images_have_infinite_psnr_and_ssim_1():
    image = smooth((32, 30, 24), 0) * 900
    brain = ball(image.shape, (16, 15, 12), 9)
    assert psnr(image, image) == np.inf and psnr(image, image, brain) == np.inf
    assert ssim(image, image) == pytest.approx(1, abs=1e-6)
    assert ssim(image[:, :, 5], image[:, :, 5]) == pytest.approx(1, abs=1e-6)
    scores = image_scores(image, image, brain)
    assert set(scores) == set(COLUMNS[1:])
    assert all(scores[k] == np.inf for k in scores if k.startswith("psnr"))
    assert all(scores[k] == pytest.approx(1, abs=1e-6) for k in scores if k.startswith("ssim"))


def test_psnr_of_known_noise_is_10_log10_range_squared_over_mse():
    reference = smooth((30, 28, 20), 1) * 1000.0 + 50  # range exactly 1000
    noise = np.random.default_rng(2).normal(0, 20, reference.shape)
    expected = 10 * np.log10(1000.0 ** 2 / np.mean(noise ** 2))
    assert psnr(reference + noise, reference) == pytest.approx(expected, abs=1e-9)
    assert psnr(reference + noise, reference, data_range=500) == pytest.approx(
        10 * np.log10(500.0 ** 2 / np.mean(noise ** 2)), abs=1e-9)


def test_ssim_and_psnr_agree_with_monai_on_smooth_3d_volumes():
    from monai.metrics import PSNRMetric, SSIMMetric

    for seed in range(3):
        reference = smooth((40, 36, 28), seed)
        prediction = degraded(reference, seed + 10, amount=0.03 * (seed + 1))
        monai_ssim = SSIMMetric(spatial_dims=3, data_range=1.0)(
            as_batch(prediction), as_batch(reference)).item()
        monai_psnr = PSNRMetric(max_val=1.0)(as_batch(prediction), as_batch(reference)).item()
        assert ssim(prediction, reference, data_range=1.0) == pytest.approx(monai_ssim, abs=1e-4)
        assert psnr(prediction, reference, data_range=1.0) == pytest.approx(monai_psnr, abs=1e-4)
        assert ssim(prediction, reference) == pytest.approx(monai_ssim, abs=1e-4)  # range is 1


def test_ssim_agrees_with_monai_on_2d_images_and_uses_only_windows_inside_the_image():
    from monai.metrics import SSIMMetric
    from monai.metrics.regression import compute_ssim_and_cs

    reference = smooth((64, 56), 3, sigma=1.5)
    prediction = degraded(reference, 4, amount=0.08)
    monai_ssim = SSIMMetric(spatial_dims=2, data_range=1.0)(
        as_batch(prediction), as_batch(reference)).item()
    assert ssim(prediction, reference, data_range=1.0) == pytest.approx(monai_ssim, abs=1e-4)
    monai_map, _ = compute_ssim_and_cs(as_batch(prediction), as_batch(reference), 2,
                                       [11, 11], [1.5, 1.5], data_range=1.0)
    ours = ssim_map(local_moments(prediction, reference, (0, 1)), 1.0)
    assert ours.shape == (54, 46) == tuple(monai_map.shape[2:])  # valid: 10 voxels shorter
    assert np.abs(ours - monai_map[0, 0].numpy()).max() < 1e-4


def test_ssim_of_raw_mr_intensities_matches_a_float64_oracle():
    # Intensities near 3000 with a range of 300: float32 E[x²] − E[x]² alone loses ~3e-5 here.
    reference = smooth((16, 15, 14), 5, sigma=1.0) * 300 + 3000
    prediction = degraded(reference, 6, amount=20)
    weights = gaussian_window()
    kernel = np.einsum("i,j,k->ijk", weights, weights, weights)

    def blur(image):
        windows = np.lib.stride_tricks.sliding_window_view(image, (11, 11, 11))
        return np.einsum("xyzijk,ijk->xyz", windows, kernel)

    mean_x, mean_y = blur(prediction), blur(reference)
    var_x = blur(prediction ** 2) - mean_x ** 2
    var_y = blur(reference ** 2) - mean_y ** 2
    covariance = blur(prediction * reference) - mean_x * mean_y
    c1, c2 = (0.01 * 300) ** 2, (0.03 * 300) ** 2
    oracle = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)
              / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))).mean()
    assert ssim(prediction, reference, data_range=300) == pytest.approx(oracle, abs=1e-6)


def test_masked_scores_ignore_what_lies_outside_the_mask():
    reference = smooth((40, 40, 30), 7) * 800
    prediction = degraded(reference, 8, amount=30)
    brain = ball(reference.shape, (20, 20, 15), 8)  # reaches 7..33 along x and y, 7..23 along z
    far = ~ball(reference.shape, (20, 20, 15), 8 + 5 * np.sqrt(3) + 0.5)  # out of every window
    scrambled = prediction.copy()
    scrambled[~brain] = np.random.default_rng(9).uniform(0, 5000, (~brain).sum())
    scrambled_far = prediction.copy()
    scrambled_far[far] = 5000.0
    assert psnr(scrambled, reference, brain) == psnr(prediction, reference, brain)
    assert ssim(scrambled_far, reference, brain) == pytest.approx(
        ssim(prediction, reference, brain), abs=1e-6)
    assert psnr(scrambled, reference) < psnr(prediction, reference) - 10
    inside = prediction.copy()
    inside[brain] += 100
    assert psnr(inside, reference, brain) < psnr(prediction, reference, brain) - 3
    assert ssim(inside, reference, brain) < ssim(prediction, reference, brain) - 0.01


def test_masked_ssim_is_the_mean_of_monais_map_over_window_centres_in_the_mask():
    from monai.metrics.regression import compute_ssim_and_cs

    reference = smooth((36, 34, 30), 11)
    prediction = degraded(reference, 12, amount=0.1)
    brain = ball(reference.shape, (18, 17, 15), 10)
    monai_map, _ = compute_ssim_and_cs(as_batch(prediction), as_batch(reference), 3,
                                       [11] * 3, [1.5] * 3, data_range=0.7)
    centres = brain[5:-5, 5:-5, 5:-5]
    expected = monai_map[0, 0].numpy()[centres].mean()
    assert ssim(prediction, reference, brain, data_range=0.7) == pytest.approx(expected, abs=1e-4)


def test_slice_mean_averages_the_2d_scores_of_the_slices_holding_brain():
    reference = smooth((32, 32, 20), 13) * 600
    prediction = degraded(reference, 14, amount=25)
    brain = np.zeros(reference.shape, bool)
    brain[6:26, 6:26, 4:12] = True  # slices 4..11 hold brain
    prediction[:, :, 15] += 400  # a slice without brain: must not count
    peak = float(np.ptp(reference[brain]))
    by_hand = [psnr(prediction[:, :, k], reference[:, :, k], brain[:, :, k], data_range=peak)
               for k in range(4, 12)]
    assert slice_mean(psnr, prediction, reference, brain) == pytest.approx(np.mean(by_hand))
    whole_slice_ssim = [ssim(prediction[:, :, k], reference[:, :, k], data_range=np.ptp(reference))
                  for k in range(4, 12)]
    assert slice_mean(ssim, prediction, reference, brain, whole_slices=True) == pytest.approx(
        np.mean(whole_slice_ssim))


def test_image_scores_equal_the_one_by_one_functions():
    reference = smooth((36, 32, 24), 15) * 700
    reference[reference < 200] = 0  # background
    prediction = degraded(reference, 16, amount=20)
    brain = reference != 0
    scores = image_scores(prediction, reference, brain)
    expected = {
        "psnr_3d": psnr(prediction, reference), "ssim_3d": ssim(prediction, reference),
        "psnr_slices": slice_mean(psnr, prediction, reference, brain, whole_slices=True),
        "ssim_slices": slice_mean(ssim, prediction, reference, brain, whole_slices=True),
        "psnr_3d_brain": psnr(prediction, reference, brain),
        "ssim_3d_brain": ssim(prediction, reference, brain),
        "psnr_slices_brain": slice_mean(psnr, prediction, reference, brain),
        "ssim_slices_brain": slice_mean(ssim, prediction, reference, brain)}
    assert scores == pytest.approx(expected, abs=1e-6)
    assert set(image_scores(prediction, reference)) == {"psnr_3d", "ssim_3d", "psnr_slices",
                                                        "ssim_slices"}


def test_image_case_ids_drop_the_modality_suffix():
    assert image_case_id("a/BraTS-GLI-00001-001-t1c.nii.gz") == ("BraTS-GLI-00001-001", "t1c")
    assert image_case_id("BraTS-GLI-00001-001.nii") == ("BraTS-GLI-00001-001", "")
    assert image_case_id("case_7_FLAIR.nii.gz") == ("case_7", "flair")


# ---- the command ------------------------------------------------------------------------------

def save_image(path: Path, image: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4) if affine is None else affine),
             path)
    return path


def head(seed: int, shape=(32, 32, 24)) -> np.ndarray:
    """A smooth 'brain' on a zero background."""
    image = smooth(shape, seed) * 800 + 100
    return image * ball(shape, [n / 2 for n in shape], 10)


@pytest.fixture
def cohort(tmp_path):
    """References in BraTS case folders (t1c, t2f, seg), predictions flat, three cases."""
    for number in (1, 2, 3):
        case = f"BraTS-GLI-0000{number}-001"
        real = head(number)
        save_image(tmp_path / "ref" / case / f"{case}-t1c.nii.gz", real)
        save_image(tmp_path / "ref" / case / f"{case}-t2f.nii.gz", real * 0.5)
        save_image(tmp_path / "ref" / case / f"{case}-seg.nii.gz", (real > 500).astype(float))
        save_image(tmp_path / "pred" / f"{case}.nii.gz", degraded(real, number, 10 * number))
    return tmp_path


def read_csv(path: Path) -> tuple[str, list[dict]]:
    with open(path, newline="") as handle:
        header = handle.readline().strip()
        handle.seek(0)
        return header, list(csv.DictReader(handle))


def test_folders_are_matched_by_case_id_with_exact_columns_and_mean_and_sd_rows(cohort):
    out = cohort / "scores.csv"
    result = runner.invoke(app, ["evaluate-image", "--pred", str(cohort / "pred"),
                                 "--ref", str(cohort / "ref"), "--modality", "t1c", "-o", str(out)])
    assert result.exit_code == 0, result.output
    header, rows = read_csv(out)
    assert header == HEADER
    assert [r["case"] for r in rows] == ["BraTS-GLI-00001-001", "BraTS-GLI-00002-001",
                                         "BraTS-GLI-00003-001", "mean", "sd"]
    case_2 = cohort / "ref" / "BraTS-GLI-00002-001" / "BraTS-GLI-00002-001-t1c.nii.gz"
    prediction = nib.load(cohort / "pred" / "BraTS-GLI-00002-001.nii.gz").get_fdata()
    reference = nib.load(case_2).get_fdata()
    expected = image_scores(prediction, reference, reference != 0)
    assert float(rows[1]["ssim_3d_brain"]) == pytest.approx(expected["ssim_3d_brain"], abs=1e-5)
    psnrs = [float(r["psnr_3d"]) for r in rows[:3]]
    assert float(rows[3]["psnr_3d"]) == pytest.approx(np.mean(psnrs), abs=1e-5)
    assert float(rows[4]["psnr_3d"]) == pytest.approx(np.std(psnrs, ddof=1), abs=1e-5)
    assert psnrs[0] > psnrs[1] > psnrs[2]  # more noise, lower PSNR


def test_a_case_folder_with_several_images_needs_a_modality(cohort):
    result = runner.invoke(app, ["evaluate-image", "--pred", str(cohort / "pred"),
                                 "--ref", str(cohort / "ref")])
    assert result.exit_code == 2
    assert "has 2 images (t1c, t2f)" in result.stderr and "--modality" in result.stderr


def test_the_prediction_suffix_picks_the_modality_and_json_is_one_object(cohort):
    case = "BraTS-GLI-00001-001"
    named = save_image(cohort / "named" / f"{case}-t2f.nii.gz", head(1) * 0.5)
    result = runner.invoke(app, ["evaluate-image", "--pred", str(named), "--ref",
                                 str(cohort / "ref"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cases"] == 1 and report["rows"][0]["psnr_3d"] == "inf"  # t2f = t2f
    assert report["sd"]["psnr_3d"] is None


def test_a_brain_mask_folder_is_matched_by_case_id(cohort):
    for number in (1, 2, 3):
        case = f"BraTS-GLI-0000{number}-001"
        brain = np.zeros((32, 32, 24)); brain[10:22, 10:22, 8:16] = 1
        save_image(cohort / "brains" / f"{case}-brain.nii.gz", brain)
    out = cohort / "scores.json"
    result = runner.invoke(app, ["evaluate-image", "--pred", str(cohort / "pred"), "--ref",
                                 str(cohort / "ref"), "--modality", "t1c", "--mask",
                                 str(cohort / "brains"), "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    reference = nib.load(cohort / "ref" / "BraTS-GLI-00001-001" /
                         "BraTS-GLI-00001-001-t1c.nii.gz").get_fdata()
    prediction = nib.load(cohort / "pred" / "BraTS-GLI-00001-001.nii.gz").get_fdata()
    brain = np.zeros(reference.shape, bool); brain[10:22, 10:22, 8:16] = True
    assert rows[0]["psnr_3d_brain"] == pytest.approx(psnr(prediction, reference, brain), abs=1e-5)


def test_a_prediction_on_another_grid_is_one_line_naming_both_files(tmp_path):
    reference = save_image(tmp_path / "real-t1c.nii.gz", head(1))
    moved = save_image(tmp_path / "moved.nii.gz", head(1), affine=np.diag([1.0, 1, 2, 1]))
    result = runner.invoke(app, ["evaluate-image", "--pred", str(moved), "--ref", str(reference)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "moved.nii.gz" in lines[0] and "real-t1c.nii.gz" in lines[0]
    assert "not on the same grid" in lines[0] and "Hint:" in lines[0]


def test_a_missing_path_is_bad_input(tmp_path):
    reference = save_image(tmp_path / "real.nii.gz", head(1))
    result = runner.invoke(app, ["evaluate-image", "--pred", str(tmp_path / "nope.nii.gz"),
                                 "--ref", str(reference)])
    assert result.exit_code == 2 and "nope.nii.gz: not found" in result.stderr


def test_a_case_without_reference_is_a_partial_batch(cohort):
    save_image(cohort / "pred" / "BraTS-GLI-00009-001.nii.gz", head(9))
    out = cohort / "scores.csv"
    result = runner.invoke(app, ["evaluate-image", "--pred", str(cohort / "pred"), "--ref",
                                 str(cohort / "ref"), "--modality", "t1c", "-o", str(out)])
    assert result.exit_code == 3 and "BraTS-GLI-00009-001.nii.gz" in result.stderr
    assert len(read_csv(out)[1]) == 3 + 2


def test_evaluate_image_as_a_real_subprocess(tmp_path):
    reference = save_image(tmp_path / "real.nii.gz", head(4))
    prediction = save_image(tmp_path / "pred.nii.gz", degraded(head(4), 5, 15))
    out = tmp_path / "scores.csv"
    result = subprocess.run(
        [sys.executable, "-m", "tumorcli.cli.app", "evaluate-image", "--pred", str(prediction),
         "--ref", str(reference), "-o", str(out)],
        capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SSIM" in result.stdout and "wrote" in result.stdout
    header, rows = read_csv(out)
    assert header == HEADER and [r["case"] for r in rows] == ["real", "mean", "sd"]
    assert rows[2]["psnr_3d"] == ""  # one case: no SD


def test_percentile_normalisation_ignores_a_scanner_gain_but_not_a_change(tmp_path):
    real = head(4)
    reference = save_image(tmp_path / "ref" / "BraTS-GLI-00004-001-t1c.nii.gz", real)
    rescaled = save_image(tmp_path / "gain" / "BraTS-GLI-00004-001-t1c.nii.gz", 2.5 * real + 0)
    changed = real.copy()
    changed[12:18, 12:18, 10:14] *= 0.3                       # a darker cavity
    moved = save_image(tmp_path / "change" / "BraTS-GLI-00004-001-t1c.nii.gz", 2.5 * changed)
    scores = {}
    for name, prediction in (("gain", rescaled), ("change", moved)):
        for how in ("none", "percentile"):
            result = runner.invoke(app, ["evaluate-image", "--pred", str(prediction), "--ref",
                                         str(reference), "--normalize", how, "--json"])
            assert result.exit_code == 0, result.output
            scores[name, how] = json.loads(result.stdout)["rows"][0]["psnr_3d_brain"]
    assert scores["gain", "percentile"] > 100 and scores["gain", "none"] < 10  # float32 noise
    assert 5 < scores["change", "percentile"] < 40      # the cavity is still an error
    brain = real != 0
    normalised = percentile_normalised(real, brain)
    assert normalised[~brain].max() == 0 and normalised.max() == 1
    assert np.mean(normalised[brain] == 1) == pytest.approx(0.005, abs=0.003)


def test_an_unknown_normalisation_is_one_red_line(tmp_path):
    reference = save_image(tmp_path / "real.nii.gz", head(1))
    result = runner.invoke(app, ["evaluate-image", "--pred", str(reference), "--ref",
                                 str(reference), "--normalize", "minmax"])
    assert result.exit_code == 2 and "--normalize minmax: unknown" in result.stderr
