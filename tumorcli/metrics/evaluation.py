"""Scores of a predicted label mask against a reference on the same grid, per region.

For each region (TC, WT, ET): Dice, HD95 in mm, sensitivity, precision (conventions for empty
masks in `overlap` and `distance`), optionally the BraTS 2023 lesion-wise Dice and HD95.

Speed: the two masks are read once; one pass finds the tumour voxels of each, everything else
runs on the bounding box of their union (a joint histogram gives every region's counts at once).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tumorcli.errors import BadInput
from tumorcli.io.volume import Volume
from tumorcli.metrics.distance import bounding_box, hausdorff95
from tumorcli.metrics.lesionwise import DILATION_ITERATIONS, LesionwiseScore, lesionwise_scores
from tumorcli.metrics.overlap import overlap_from_joint_counts
from tumorcli.metrics.regions import EVALUATED_REGIONS, LabelScheme, as_label_array, label_counts
from tumorcli.metrics.tables import TableLayout

GRID_TOLERANCE_MM = 1e-3
COLUMNS = ("case", "region", "dice", "hd95_mm", "sensitivity", "precision")
LESIONWISE_COLUMNS = ("lesionwise_dice", "lesionwise_hd95_mm", "lesions", "lesions_detected",
                      "lesions_missed", "false_positive_lesions")


@dataclass(frozen=True)
class RegionScores:
    """Scores of one region of one case; lesionwise is None unless asked for."""

    case: str
    region: str
    dice: float
    hd95_mm: float
    sensitivity: float
    precision: float
    lesionwise: LesionwiseScore | None = None

    def row(self) -> dict:
        """Flat dict in CSV column order."""
        row = {"case": self.case, "region": self.region, "dice": self.dice,
               "hd95_mm": self.hd95_mm, "sensitivity": self.sensitivity,
               "precision": self.precision}
        if self.lesionwise is not None:
            score = asdict(self.lesionwise)
            row.update(zip(LESIONWISE_COLUMNS, (score["dice"], score["hd95_mm"], score["lesions"],
                                                score["detected"], score["missed"],
                                                score["false_positives"])))
        return row


def check_same_grid(prediction: Volume, reference: Volume,
                    tolerance_mm: float = GRID_TOLERANCE_MM) -> None:
    """BadInput naming both files unless they share shape and affine (within `tolerance_mm`)."""
    if prediction.shape != reference.shape:
        raise BadInput(f"{prediction.source} ({_shape(prediction)}) and {reference.source} "
                       f"({_shape(reference)}) are not on the same grid",
                       "resample the prediction onto the reference grid first")
    if not np.allclose(prediction.affine, reference.affine, rtol=0, atol=tolerance_mm):
        worst = float(np.abs(prediction.affine - reference.affine).max())
        raise BadInput(f"{prediction.source} and {reference.source} are not on the same grid "
                       f"(affines differ by up to {worst:.3g} mm)",
                       "resample the prediction onto the reference grid first")


def evaluate_case(case: str, prediction: Volume, reference: Volume, scheme: LabelScheme,
                  lesionwise: bool = False) -> list[RegionScores]:
    """Scores of TC, WT and ET for one case. Raises BadInput (naming the file) for different
    grids or masks that are not label masks of `scheme`."""
    check_same_grid(prediction, reference)
    spacing = prediction.spacing
    predicted = as_label_array(prediction.array, str(prediction.source))
    expected = as_label_array(reference.array, str(reference.source))
    predicted_tumour, expected_tumour = predicted != 0, expected != 0
    label_counts(predicted, str(prediction.source), scheme)  # checks the labels
    label_counts(expected, str(reference.source), scheme)

    margin = DILATION_ITERATIONS + 1 if lesionwise else 1
    box = bounding_box(predicted_tumour | expected_tumour, margin=margin)
    if box is None:  # no tumour on either side: every region is "both empty"
        box = tuple(slice(0, 1) for _ in predicted.shape)
    predicted, expected = predicted[box], expected[box]  # (x, y, z) crop
    n_values = max(scheme.values) + 1
    joint = np.bincount(predicted.astype(np.intp).ravel() * n_values + expected.ravel(),
                        minlength=n_values * n_values).reshape(n_values, n_values)

    scores = []
    for region in EVALUATED_REGIONS:
        lookup = scheme.region_lookup(region, n_values - 1)  # (n_values,) bool
        overlap = overlap_from_joint_counts(joint, lookup, lookup)
        predicted_region, expected_region = lookup[predicted], lookup[expected]
        lesion_scores = None
        if lesionwise:
            lesion_scores = lesionwise_scores(predicted_region, expected_region, spacing,
                                              prediction.voxel_volume_mm3)
        scores.append(RegionScores(
            case=case, region=region, dice=overlap.dice,
            hd95_mm=hausdorff95(predicted_region, expected_region, spacing),
            sensitivity=overlap.sensitivity, precision=overlap.precision,
            lesionwise=lesion_scores))
    return scores


def evaluate_files(pair: tuple[str, Path, Path], scheme: LabelScheme,
                   lesionwise: bool = False) -> list[RegionScores]:
    """`evaluate_case` of a (case id, prediction file, reference file) pair, read here."""
    from tumorcli.io.volume import load_volume

    case, prediction_path, reference_path = pair
    return evaluate_case(case, load_volume(prediction_path), load_volume(reference_path),
                         scheme, lesionwise)


def mean_rows(scores: list[RegionScores]) -> list[dict]:
    """One row per region with case = "mean": the average of each numeric column over cases."""
    return region_means([s.row() for s in scores])


def region_means(rows: list[dict]) -> list[dict]:
    """The "mean" rows (TC, WT, ET) of per-case rows in COLUMNS (+ LESIONWISE_COLUMNS) order."""
    means = []
    for region in EVALUATED_REGIONS:
        of_region = [row for row in rows if row["region"] == region]
        if not of_region:
            continue
        mean = {"case": "mean", "region": region}
        for column in list(of_region[0])[2:]:
            mean[column] = float(np.mean([row[column] for row in of_region]))
        means.append(mean)
    return means


# The two tables `tumor evaluate` writes, for `tumor evaluate --merge`.
TABLES = (TableLayout(COLUMNS, ("case", "region"), summary=region_means),
          TableLayout(COLUMNS + LESIONWISE_COLUMNS, ("case", "region"), summary=region_means))


def _shape(volume: Volume) -> str:
    return "×".join(str(n) for n in volume.shape)
