"""Scoring a predicted follow-up on normal tissue: the tissue-median match, the tumour / rest
regions of `tumor evaluate-image --labels`, and the follow-up harmonisation of predict-post's
training pairs (preprocess/harmonise)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.metrics.image import percentile_normalised, psnr, ssim
from tumorcli.metrics.image_regions import region_masks, region_scores, tissue_normalised
from tumorcli.preprocess.harmonise import normal_tissue, relative_bias, tissue_median_scale

runner = CliRunner()
SHAPE = (40, 40, 30)


def brain_ball(shape=SHAPE, radius=16) -> np.ndarray:
    grid = np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2
    return (grid ** 2).sum(0) <= radius ** 2


def scan(seed: int) -> np.ndarray:
    """A textured 'brain' (values 300–700) on a zero background."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    texture = gaussian_filter(rng.normal(size=SHAPE), 1.5)
    return np.where(brain_ball(), 500 + 200 * texture / texture.std(), 0).astype(np.float32)


def tumour_box() -> np.ndarray:
    box = np.zeros(SHAPE, bool)
    box[16:24, 16:24, 12:18] = True
    return box


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), path)
    return path


def test_the_tissue_median_ignores_a_bright_tumour_that_moves_the_top_percentile():
    brain, tumour = brain_ball(), tumour_box()
    pre = scan(1)
    followup = 3.0 * pre                                    # another scanner gain
    pre_with_rim = np.where(tumour, 4 * pre, pre)           # the pre-op scan's bright rim
    tissue = tissue_normalised(pre_with_rim, brain, tumour)
    assert np.allclose(tissue[brain & ~tumour], tissue_normalised(followup, brain, tumour)
                       [brain & ~tumour], atol=1e-5)
    percentile = [percentile_normalised(v, brain) for v in (pre_with_rim, followup)]
    assert not np.allclose(percentile[0][brain & ~tumour], percentile[1][brain & ~tumour],
                           atol=0.05)


def test_regions_split_the_brain_at_the_labels_dilated_by_three_voxels():
    brain, tumour = brain_ball(), tumour_box()
    regions = region_masks(brain, tumour)
    assert not (regions["tumour"] & regions["rest"]).any()
    assert np.array_equal(regions["tumour"] | regions["rest"], brain)
    assert regions["tumour"][15, 20, 14] and regions["tumour"][13, 20, 14]   # 3 voxels out
    assert not regions["tumour"][12, 20, 14]


def test_region_scores_are_psnr_and_ssim_over_each_region_on_the_brains_range():
    brain, tumour = brain_ball(), tumour_box()
    truth, prediction = scan(2), scan(2) + 0.0
    prediction[tumour] *= 0.5                                 # wrong only in the tumour
    scores = region_scores(prediction, truth, brain, tumour)
    peak = float(truth[brain].max() - truth[brain].min())
    regions = region_masks(brain, tumour)
    assert scores["psnr_3d_tumour"] == pytest.approx(psnr(prediction, truth, regions["tumour"],
                                                          peak))
    assert scores["ssim_3d_tumour"] == pytest.approx(ssim(prediction, truth, regions["tumour"],
                                                          peak))
    assert scores["psnr_3d_rest"] == np.inf and scores["psnr_3d_tumour"] < 20


def test_evaluate_image_tissue_scores_a_gain_as_nothing_and_a_cavity_around_the_tumour(tmp_path):
    tumour = tumour_box()
    pre = scan(3)
    followup = np.where(tumour, 0.2 * pre, pre) * 2.5         # a cavity, another scanner gain
    files = {name: save(tmp_path / f"{name}.nii.gz", array) for name, array in (
        ("pre", pre), ("post", followup), ("post-seg", tumour), ("pre-seg", tumour),
        ("perfect", followup / 2.5 * 7.0))}
    rows = {}
    for name in ("pre", "perfect"):
        result = runner.invoke(app, ["evaluate-image", "--pred", str(files[name]), "--ref",
                                     str(files["post"]), "--normalize", "tissue", "--labels",
                                     str(files["pre-seg"]), "--labels", str(files["post-seg"]),
                                     "--json"])
        assert result.exit_code == 0, result.output
        rows[name] = json.loads(result.stdout)["rows"][0]
    assert rows["perfect"]["psnr_3d_brain"] > 80                 # float32 rounding only
    assert rows["pre"]["psnr_3d_rest"] > 80 and rows["pre"]["psnr_3d_tumour"] < 25
    assert rows["pre"]["ssim_3d_tumour"] < rows["pre"]["ssim_3d_rest"]


def test_tissue_normalisation_without_labels_is_one_red_line(tmp_path):
    image = save(tmp_path / "a.nii.gz", scan(1))
    result = runner.invoke(app, ["evaluate-image", "--pred", str(image), "--ref", str(image),
                                 "--normalize", "tissue"])
    assert result.exit_code == 2
    assert "--normalize tissue needs the tumour labels" in result.stderr
    result = runner.invoke(app, ["evaluate-image", "--pred", str(image), "--ref", str(image),
                                 "--labels", str(tmp_path / "missing-seg.nii.gz")])
    assert result.exit_code == 2 and "missing-seg.nii.gz: --labels not found" in result.stderr


def test_a_labels_folder_gives_each_case_its_own_seg_file(tmp_path):
    for number in (1, 2):
        case = f"BraTS-GLI-0000{number}-001"
        save(tmp_path / "ref" / case / f"{case}-t1c.nii.gz", scan(number))
        save(tmp_path / "ref" / case / f"{case}-seg.nii.gz", tumour_box())
        save(tmp_path / "pred" / f"{case}-t1c.nii.gz", scan(number) * 1.5)
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["evaluate-image", "--pred", str(tmp_path / "pred"), "--ref",
                                 str(tmp_path / "ref"), "--normalize", "tissue", "--labels",
                                 str(tmp_path / "ref"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    header = out.read_text().splitlines()[0]
    assert header.endswith("psnr_3d_tumour,ssim_3d_tumour,psnr_3d_rest,ssim_3d_rest")


def test_the_relative_bias_of_two_scans_is_recovered_across_the_tumour():
    from scipy.ndimage import gaussian_filter

    brain, tumour = brain_ball(), tumour_box()
    rng = np.random.default_rng(5)
    field = np.exp(0.2 * gaussian_filter(rng.normal(size=SHAPE), 10) /
                   gaussian_filter(rng.normal(size=SHAPE), 10).std())
    pre = scan(4)
    followup = np.where(tumour, 0.3, 1.0) * pre * field        # treated tumour, another field
    normal = normal_tissue(brain, tumour, (2.0, 2.0, 2.0))
    assert not (normal & tumour).any() and normal.sum() > 0.8 * (brain & ~tumour).sum()
    pre_t = pre / tissue_median_scale(pre, normal)
    post_t = followup / tissue_median_scale(followup, normal)
    estimate = relative_bias(post_t, pre_t, normal, (2.0, 2.0, 2.0), sigma_mm=8.0)
    truth = field / np.exp(np.log(field[normal]).mean())
    error = np.abs(estimate / truth - 1)[brain]
    assert np.median(error) < 0.03 and error.max() < 0.15
    harmonised = post_t / estimate
    before = np.abs(post_t - pre_t)[normal].mean()
    assert np.abs(harmonised - pre_t)[normal].mean() < 0.3 * before
