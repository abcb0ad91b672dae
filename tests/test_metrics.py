"""Segmentation metrics: the same numbers as MONAI on random anisotropic blobs, the BraTS
conventions for empty masks, and lesion-wise scores on hand-built cases with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter

from tumorcli.errors import BadInput
from tumorcli.io.volume import Volume
from tumorcli.metrics.distance import HD95_ONE_EMPTY_MM, hausdorff95, mask_edges
from tumorcli.metrics.evaluation import evaluate_case
from tumorcli.metrics.lesionwise import lesionwise_scores
from tumorcli.metrics.overlap import Overlap
from tumorcli.metrics.regions import as_label_array, label_counts, parse_labels, region_voxels

SCHEME = parse_labels()


def random_labels(shape, seed: int, shift=(0, 0, 0)) -> np.ndarray:
    """A lumpy tumour: ET rim around NETC, inside SNFH, plus a satellite; (X, Y, Z) uint8."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = [n / 2 + s for n, s in zip(shape, shift)]
    radius = np.sqrt(sum((grid[i] - centre[i]) ** 2 for i in range(3)))
    lumpy = radius + 6 * gaussian_filter(rng.standard_normal(shape).astype(np.float32), 3) * 4
    size = min(shape) / 3
    labels = np.zeros(shape, np.uint8)
    labels[lumpy < size] = 2
    labels[lumpy < 0.6 * size] = 3
    labels[lumpy < 0.35 * size] = 1
    labels[2:5, 2:6, 2:4] = 3  # a small satellite near a corner
    return labels


def monai_scores(prediction: np.ndarray, reference: np.ndarray, spacing) -> tuple:
    """MONAI Dice and HD95 of TC, WT, ET: two (3,) arrays."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    def one_hot(labels):  # (1, 3, X, Y, Z): TC, WT, ET
        return torch.from_numpy(np.stack([np.isin(labels, (1, 3)), labels > 0, labels == 3])[None])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = compute_dice(one_hot(prediction), one_hot(reference), include_background=True)
        hd95 = compute_hausdorff_distance(one_hot(prediction), one_hot(reference),
                                          include_background=True, percentile=95,
                                          spacing=list(spacing))
    return dice.numpy()[0], hd95.numpy()[0]


@pytest.mark.parametrize("seed, spacing", [(0, (1.0, 1.0, 1.0)), (1, (0.9, 1.3, 2.7)),
                                           (2, (0.5, 0.5, 3.0)), (3, (1.2, 0.7, 1.9)),
                                           (4, (2.0, 1.0, 0.6))])
def test_dice_and_hd95_agree_with_monai_on_random_anisotropic_blobs(seed, spacing):
    shape = (44, 40, 36)
    reference = random_labels(shape, seed)
    prediction = random_labels(shape, seed + 100, shift=(2, -1, 1))
    affine = np.diag([*spacing, 1.0])
    scores = evaluate_case("case", Volume(prediction, affine, source="p"),
                           Volume(reference, affine, source="r"), SCHEME)
    monai_dice, monai_hd95 = monai_scores(prediction, reference, spacing)
    assert [s.region for s in scores] == ["TC", "WT", "ET"]
    assert np.allclose([s.dice for s in scores], monai_dice, rtol=0, atol=1e-6)
    assert np.allclose([s.hd95_mm for s in scores], monai_hd95, rtol=0, atol=1e-3)
    assert all(s.hd95_mm > 0 for s in scores)  # the comparison is not 0 == 0


def test_edges_are_the_mask_minus_its_six_neighbour_erosion_as_in_monai():
    mask = random_labels((30, 28, 26), 7) > 0
    mask[0, 10:20, 10:20] = True  # touching the image border: outside counts as background
    assert np.array_equal(mask_edges(mask), mask ^ binary_erosion(mask, border_value=0))


def test_hd95_of_two_cubes_a_known_shift_apart_in_mm():
    reference = np.zeros((20, 20, 20), bool)
    reference[5:10, 5:10, 5:10] = True
    prediction = np.roll(reference, 2, axis=2)  # two slices of 3 mm further along k
    assert hausdorff95(prediction, reference, (1.0, 1.0, 3.0)) == pytest.approx(6.0)


def test_both_empty_scores_one_and_hd95_zero():
    empty = np.zeros((10, 10, 10), np.uint8)
    scores = evaluate_case("c", Volume(empty, np.eye(4), source="p"),
                           Volume(empty.copy(), np.eye(4), source="r"), SCHEME)
    for s in scores:
        assert (s.dice, s.hd95_mm, s.sensitivity, s.precision) == (1.0, 0.0, 1.0, 1.0)


def test_exactly_one_empty_scores_zero_and_hd95_373_13_mm():
    tumour = np.zeros((10, 10, 10), np.uint8)
    tumour[3:6, 3:6, 3:6] = 3
    empty = np.zeros_like(tumour)
    for prediction, reference in ((tumour, empty), (empty, tumour)):
        scores = evaluate_case("c", Volume(prediction, np.eye(4), source="p"),
                               Volume(reference, np.eye(4), source="r"), SCHEME)
        for s in scores:
            assert (s.dice, s.hd95_mm, s.sensitivity, s.precision) == (0.0, 373.13, 0.0, 0.0)
    assert HD95_ONE_EMPTY_MM == 373.13


def test_an_et_only_prediction_scores_no_snfh_in_wt():
    reference = np.zeros((12, 12, 12), np.uint8)
    reference[2:6, 2:6, 2:6] = 2  # oedema only: no TC, no ET in the reference
    prediction = reference.copy()
    prediction[3:5, 3:5, 3:5] = 3
    tc, wt, et = evaluate_case("c", Volume(prediction, np.eye(4), source="p"),
                               Volume(reference, np.eye(4), source="r"), SCHEME)
    assert wt.dice == 1.0 and wt.hd95_mm == 0.0
    assert (tc.dice, tc.sensitivity, tc.precision, tc.hd95_mm) == (0.0, 0.0, 0.0, 373.13)


def test_sensitivity_and_precision_from_counts():
    overlap = Overlap(true_positive=30, false_positive=10, false_negative=20)
    assert overlap.dice == pytest.approx(60 / 90)
    assert overlap.sensitivity == pytest.approx(30 / 50)
    assert overlap.precision == pytest.approx(30 / 40)


def test_tc_is_netc_plus_et_and_wt_all_three():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels.flat[:7] = 1
    labels.flat[7:18] = 2
    labels.flat[18:31] = 3
    voxels = region_voxels(label_counts(labels, "m", SCHEME), SCHEME)
    assert voxels == {"NETC": 7, "SNFH": 11, "ET": 13, "TC": 20, "WT": 31}


def test_brats_2021_labels_with_the_labels_option():
    labels = np.array([0, 1, 2, 4, 4], np.uint8)
    with pytest.raises(BadInput, match="m.nii.gz: holds label value"):
        label_counts(labels, "m.nii.gz", SCHEME)
    scheme = parse_labels("1=NCR,2=ED,4=ET")
    assert region_voxels(label_counts(labels, "m", scheme), scheme)["TC"] == 3


def test_probability_maps_and_negative_labels_are_not_label_masks():
    with pytest.raises(BadInput, match="p.nii.gz: not a label mask"):
        as_label_array(np.array([0.0, 0.4, 1.0]), "p.nii.gz")
    with pytest.raises(BadInput, match="n.nii.gz: not a label mask"):
        label_counts(np.array([0, -1, 1], np.int16), "n.nii.gz", SCHEME)
    assert as_label_array(np.array([0.0, 3.0]), "f").dtype.kind == "i"


def test_bad_labels_option_is_bad_input():
    for text in ("1=NETC,2=BRAIN", "0=ET", "1=ET,1=NETC", "ET"):
        with pytest.raises(BadInput, match="--labels"):
            parse_labels(text)


# Lesion-wise, on a 1 mm grid where every cube of 4³ = 64 voxels is above the 50 mm³ threshold.

def cube(mask, corner, size=4):
    x, y, z = corner
    mask[x:x + size, y:y + size, z:z + size] = True
    return mask


def lesionwise(prediction, reference):
    return lesionwise_scores(prediction, reference, (1.0, 1.0, 1.0), 1.0)


def test_lesionwise_one_found_one_missed_one_false_positive():
    reference = cube(cube(np.zeros((40, 40, 40), bool), (2, 2, 2)), (30, 30, 30))
    prediction = cube(cube(np.zeros_like(reference), (2, 2, 2)), (2, 30, 30))
    score = lesionwise(prediction, reference)
    assert (score.lesions, score.detected, score.missed, score.false_positives) == (2, 1, 1, 1)
    assert score.dice == pytest.approx((1 + 0 + 0) / 3)
    assert score.hd95_mm == pytest.approx((0 + 374 + 374) / 3)


def test_lesionwise_lesions_within_the_dilation_are_one_lesion():
    reference = cube(cube(np.zeros((30, 30, 30), bool), (5, 5, 5)), (5, 5, 11))  # gap of 2
    score = lesionwise(reference.copy(), reference)
    assert (score.lesions, score.dice, score.hd95_mm) == (1, 1.0, 0.0)


def test_lesionwise_small_lesions_are_left_out_but_do_not_make_false_positives():
    reference = cube(np.zeros((30, 30, 30), bool), (5, 5, 5))
    reference[20:23, 20:23, 20:23] = True  # 27 mm³ ≤ 50 mm³
    prediction = cube(np.zeros_like(reference), (5, 5, 5))
    prediction[20:22, 20:22, 20:22] = True  # found: not a false positive
    score = lesionwise(prediction, reference)
    assert (score.lesions, score.false_positives, score.dice, score.hd95_mm) == (1, 0, 1.0, 0.0)


def test_lesionwise_a_nearby_prediction_component_is_matched_not_false_positive():
    reference = cube(np.zeros((30, 30, 30), bool), (5, 5, 5))
    prediction = reference.copy()
    prediction[5:7, 5:7, 11] = True  # 4 voxels two slices beyond the lesion: within dilation
    score = lesionwise(prediction, reference)
    assert score.false_positives == 0
    assert score.dice == pytest.approx(2 * 64 / (64 + 68))


def test_lesionwise_empty_cases():
    empty = np.zeros((20, 20, 20), bool)
    tumour = cube(empty.copy(), (5, 5, 5))
    assert (lesionwise(empty, empty).dice, lesionwise(empty, empty).hd95_mm) == (1.0, 0.0)
    only_prediction = lesionwise(tumour, empty)
    assert (only_prediction.dice, only_prediction.hd95_mm, only_prediction.false_positives) == \
        (0.0, 374.0, 1)
    only_reference = lesionwise(empty, tumour)
    assert (only_reference.dice, only_reference.hd95_mm, only_reference.missed) == (0.0, 374.0, 1)


def test_lesionwise_uses_26_connectivity_for_prediction_components():
    reference = cube(cube(np.zeros((40, 40, 40), bool), (2, 2, 2)), (30, 30, 30))
    prediction = np.zeros_like(reference)
    prediction[20, 20, 20] = prediction[21, 21, 21] = True  # touch at a corner: one component
    score = lesionwise(prediction, reference)
    assert score.false_positives == 1 and score.missed == 2
