"""Segmentation robust to scanner bias (issue 22): the stray-component measure on hand-made
masks, and the shipped default segmenter on a synthetic subject whose T2w and FLAIR carry a
strong smooth bias field: no predicted tumour component of 1 cm³ or more apart from the tumour.

Measured by benchmarks/seg_robustness.py on the held-out sessions of the training cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tumorcli.metrics.components import stray_components

SPACING_2MM = (2.0, 2.0, 2.0)   # 8 mm³ a voxel: 125 voxels make 1 cm³


def _with_cube(labels: np.ndarray, corner, side: int, value: int = 2) -> np.ndarray:
    x, y, z = corner
    labels[x:x + side, y:y + side, z:z + side] = value
    return labels


def test_a_5x5x5_cube_of_2mm_voxels_far_from_the_tumour_is_one_stray_of_1_cm3():
    truth = _with_cube(np.zeros((40, 40, 40), np.uint8), (5, 5, 5), 6, value=1)
    predicted = _with_cube(truth.copy(), (28, 28, 28), 5)
    assert stray_components(predicted, truth, SPACING_2MM) == pytest.approx([1.0])


def test_a_component_touching_the_truth_is_not_stray_even_by_a_corner():
    truth = _with_cube(np.zeros((40, 40, 40), np.uint8), (5, 5, 5), 6, value=1)
    overlapping = _with_cube(np.zeros_like(truth), (8, 8, 8), 8)
    by_a_corner = _with_cube(np.zeros_like(truth), (11, 11, 11), 8)   # diagonal neighbour
    assert stray_components(overlapping, truth, SPACING_2MM) == []
    assert stray_components(by_a_corner, truth, SPACING_2MM) == []
    assert stray_components(by_a_corner, truth, SPACING_2MM, touch_voxels=0) == \
        pytest.approx([8 ** 3 * 8 / 1000])


def test_strays_under_1_cm3_are_left_out_and_the_rest_come_largest_first():
    truth = _with_cube(np.zeros((60, 60, 60), np.uint8), (2, 2, 2), 4, value=1)
    predicted = _with_cube(np.zeros_like(truth), (20, 20, 20), 4)          # 0.512 cm³
    predicted = _with_cube(predicted, (40, 40, 40), 10, value=3)            # 8 cm³
    predicted = _with_cube(predicted, (20, 40, 5), 6)                       # 1.728 cm³
    assert stray_components(predicted, truth, SPACING_2MM) == pytest.approx([8.0, 1.728])
    assert stray_components(predicted, truth, SPACING_2MM, min_cm3=0.5) == \
        pytest.approx([8.0, 1.728, 0.512])


def test_no_prediction_means_no_stray_and_no_truth_makes_every_large_component_stray():
    empty = np.zeros((20, 20, 20), np.uint8)
    blob = _with_cube(empty.copy(), (2, 2, 2), 5)
    assert stray_components(empty, blob, SPACING_2MM) == []
    assert stray_components(blob, empty, SPACING_2MM) == pytest.approx([1.0])


# The test. The cohort synthesiser already gives each scan a bias of amplitude 0.10-0.30
# (log-field sd); on top of it T2w and FLAIR get their own field of 0.45, 1.5× its strongest.
BIAS_AMPLITUDE = 0.45
SUBJECT_SEED = 300          # seg60 is seed 100, tune40 seed 200: a subject no model has seen


@pytest.fixture(scope="module")
def synthetic_subject(tmp_path_factory) -> Path:
    """One atlas-space pre-op session at 2 mm (96×112×80), as `tumor synth-cohort` makes."""
    from tumorcli.synth.cohort import CohortConfig, make_cohort

    cohort = tmp_path_factory.mktemp("bias") / "cohort"
    make_cohort(CohortConfig(subjects=1, sessions=1, seed=SUBJECT_SEED, space="atlas",
                             size="small"), cohort)
    return cohort / "BraTS-GLI-00001-000"


def _copy_with_bias(case: Path, out: Path, field_seed: int) -> Path:
    """`case` copied to out/<name> with T2w and FLAIR × exp(BIAS_AMPLITUDE × smooth field)."""
    import shutil

    from tumorcli.io.itk import Grid
    from tumorcli.io.volume import load_volume, save_volume
    from tumorcli.synth.grid import smooth_random_field

    biased = out / case.name
    shutil.copytree(case, biased)
    for number, modality in enumerate(("t2w", "t2f")):
        path = biased / f"{case.name}-{modality}.nii.gz"
        scan = load_volume(path)
        field = smooth_random_field(np.random.default_rng([field_seed, number]), Grid.of(scan),
                                    control_points=4)   # (X, Y, Z), as the synthesiser's
        image = np.asarray(scan.array, np.float32) * np.exp(BIAS_AMPLITUDE * field)
        save_volume(scan.with_array(image.astype(np.float32)), path)
    return biased


@pytest.mark.parametrize("field_seed", [0, 1, 2])
def test_a_strong_t2_flair_bias_field_makes_no_stray_tumour_of_1_cm3(synthetic_subject, tmp_path,
                                                                     field_seed):
    from typer.testing import CliRunner

    from tumorcli.cli.app import app
    from tumorcli.io.volume import load_volume

    case = _copy_with_bias(synthetic_subject, tmp_path, field_seed)
    output = tmp_path / "seg.nii.gz"
    result = CliRunner().invoke(app, ["segment", "-i", str(case), "-o", str(output), "--device",
                                      "cpu", "--quiet"])   # the default model, its rule on
    assert result.exit_code == 0, result.output
    labels = load_volume(output)
    truth = load_volume(case / f"{case.name}-seg.nii.gz")
    strays = stray_components(np.asarray(labels.array), np.asarray(truth.array), labels.spacing)
    assert strays == [], f"stray components (cm³) under a bias of {BIAS_AMPLITUDE}: {strays}"
