"""BraTS 2023 lesion-wise Dice and HD95 for one region (TC, WT or ET) of one case.

The definition of the BraTS 2023 evaluation code (github.com/rachitsaluja/BraTS-2023-Metrics),
with the BraTS-GLI parameters (dilation 3, lesion threshold 50 mm³):
1. Reference lesions: connected components of the reference (26-connectivity); components whose
   dilations (3 iterations of the 18-neighbour cross) touch are one lesion.
2. Prediction components: connected components of the prediction (26-connectivity).
3. For each reference lesion: the prediction components that overlap the lesion dilated the same
   way are its match; Dice and HD95 are computed between the lesion and the union of its
   matched components. A lesion with no match scores Dice 0 and HD95 374 mm.
4. Prediction components matched to no reference lesion are false positives: Dice 0, HD95 374.
5. Lesions of at most 50 mm³ are left out of the averages (their matched components still do
   not count as false positives).
   lesion-wise Dice = Σ Dice(lesion) / (lesions + false positives)
   lesion-wise HD95 = (Σ HD95(lesion) + 374 × false positives) / (lesions + false positives)
   With nothing to count (no lesion, no false positive): Dice 1, HD95 0.

Where we differ from that code: the per-lesion HD95 uses our MONAI-style surface distance
(`tumorcli.metrics.distance`) instead of DeepMind's surfel-weighted one; the penalty 374 mm is
kept as in the BraTS code (the image-level convention for one empty mask is 373.13 mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorcli.metrics.distance import bounding_box, hausdorff95

MISSED_LESION_HD95_MM = 374.0
DILATION_ITERATIONS = 3
MIN_LESION_MM3 = 50.0


@dataclass(frozen=True)
class LesionwiseScore:
    """Lesion-wise scores of one region; counts are of lesions above the volume threshold."""

    dice: float
    hd95_mm: float
    lesions: int
    detected: int
    missed: int
    false_positives: int


def lesionwise_scores(prediction: np.ndarray, reference: np.ndarray,
                      spacing: tuple[float, float, float], voxel_volume_mm3: float,
                      dilation: int = DILATION_ITERATIONS,
                      min_lesion_mm3: float = MIN_LESION_MM3) -> LesionwiseScore:
    """BraTS 2023 lesion-wise Dice and HD95 (mm) of two bool masks on one grid.

    spacing: voxel size in mm per array axis; voxel_volume_mm3 for the lesion threshold.
    """
    from scipy.ndimage import binary_dilation, generate_binary_structure, label

    box = bounding_box(prediction | reference, margin=dilation + 1)
    if box is None:
        return LesionwiseScore(1.0, 0.0, 0, 0, 0, 0)
    prediction, reference = prediction[box], reference[box]
    connectivity_26 = np.ones((3, 3, 3), dtype=bool)
    cross_18 = generate_binary_structure(3, 2)

    prediction_components, n_components = label(prediction, structure=connectivity_26)
    near_reference = binary_dilation(reference, structure=cross_18, iterations=dilation)
    dilated_components, n_lesions = label(near_reference, structure=connectivity_26)
    lesions = np.where(reference, dilated_components, 0)  # lesion id on reference voxels only

    matched_components: set[int] = set()
    dice_sum = hd95_sum = 0.0
    counted = detected = 0
    for lesion_id in range(1, n_lesions + 1):
        lesion = lesions == lesion_id
        around = bounding_box(lesion, margin=dilation + 1)
        reach = binary_dilation(lesion[around], structure=cross_18, iterations=dilation)
        matches = np.unique(prediction_components[around][reach])
        matches = matches[matches != 0]
        matched_components.update(int(m) for m in matches)
        if lesion.sum() * voxel_volume_mm3 <= min_lesion_mm3:
            continue
        counted += 1
        if matches.size == 0:
            hd95_sum += MISSED_LESION_HD95_MM
            continue
        detected += 1
        found = np.isin(prediction_components, matches)
        dice_sum += 2 * np.count_nonzero(found & lesion) / (found.sum() + lesion.sum())
        hd95_sum += hausdorff95(found, lesion, spacing, one_empty_mm=MISSED_LESION_HD95_MM)

    false_positives = n_components - len(matched_components)
    denominator = counted + false_positives
    if denominator == 0:
        return LesionwiseScore(1.0, 0.0, 0, 0, 0, 0)
    return LesionwiseScore(
        dice=float(dice_sum / denominator),
        hd95_mm=float((hd95_sum + MISSED_LESION_HD95_MM * false_positives) / denominator),
        lesions=counted, detected=detected, missed=counted - detected,
        false_positives=false_positives)
