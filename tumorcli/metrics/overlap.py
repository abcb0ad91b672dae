"""Overlap scores from voxel counts: Dice, sensitivity, precision, with BraTS conventions for
empty masks.

    dice        = 2 TP / (2 TP + FP + FN)
    sensitivity = TP / (TP + FN)      (recall: how much of the reference was found)
    precision   = TP / (TP + FP)      (how much of the prediction is right)

Empty masks, one rule for all three scores (as the BraTS 2023 evaluation code does for Dice and
sensitivity): both empty → 1; exactly one empty → 0. So a prediction that finds a tumour where
the reference has none scores sensitivity 0, not an undefined 0/0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Overlap:
    """Voxel counts of one region: true positives, false positives, false negatives."""

    true_positive: int
    false_positive: int
    false_negative: int

    @property
    def both_empty(self) -> bool:
        return self.true_positive + self.false_positive + self.false_negative == 0

    @property
    def dice(self) -> float:
        return self._ratio(2 * self.true_positive,
                           2 * self.true_positive + self.false_positive + self.false_negative)

    @property
    def sensitivity(self) -> float:
        return self._ratio(self.true_positive, self.true_positive + self.false_negative)

    @property
    def precision(self) -> float:
        return self._ratio(self.true_positive, self.true_positive + self.false_positive)

    def _ratio(self, numerator: int, denominator: int) -> float:
        if denominator == 0:  # 0/0: 1 when both masks are empty, 0 when only one is
            return 1.0 if self.both_empty else 0.0
        return numerator / denominator


def overlap_from_joint_counts(joint, prediction_in_region, reference_in_region) -> Overlap:
    """Counts of one region from a joint histogram of (prediction value, reference value).

    joint: (P, R) voxel counts, joint[p, r] = voxels with prediction p and reference r.
    prediction_in_region: (P,) bool, reference_in_region: (R,) bool lookups of the region.
    """
    predicted = joint[prediction_in_region]  # (p in region, R)
    true_positive = int(predicted[:, reference_in_region].sum())
    return Overlap(true_positive=true_positive,
                   false_positive=int(predicted.sum()) - true_positive,
                   false_negative=int(joint[:, reference_in_region].sum()) - true_positive)
