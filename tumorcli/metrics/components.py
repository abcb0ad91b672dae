"""Stray tumour components: predicted tumour that lies apart from every true tumour voxel.

A scanner bias hot spot that a net labels as oedema shows up as a connected component of the
predicted tumour (labels > 0, 26-connected) that touches no true tumour. "Touch" means the
component overlaps the true tumour dilated by `touch_voxels` steps of the 26-neighbourhood, so
with the default 1 a component whose voxels are merely adjacent (face, edge or corner) to a true
tumour voxel is not stray; 0 asks for a shared voxel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tumorcli.metrics.distance import bounding_box

CONNECTIVITY_26 = np.ones((3, 3, 3), bool)


def stray_components(predicted_labels: np.ndarray, true_labels: np.ndarray,
                     spacing_mm: tuple[float, float, float], min_cm3: float = 1.0,
                     touch_voxels: int = 1) -> list[float]:
    """Volumes in cm³ (largest first) of the predicted tumour components of at least `min_cm3`
    that touch no true tumour voxel.

    predicted_labels, true_labels: (X, Y, Z) label arrays on the same grid (0 = background,
    any other value = tumour). spacing_mm: voxel size along X, Y, Z in mm. touch_voxels: how
    far (26-neighbour steps) from the true tumour a component still counts as touching it.
    """
    predicted_labels, true_labels = np.asarray(predicted_labels), np.asarray(true_labels)
    if predicted_labels.shape != true_labels.shape:
        raise ValueError(f"predicted {predicted_labels.shape} and true {true_labels.shape} "
                         "labels are not on the same grid")
    predicted, truth = predicted_labels > 0, true_labels > 0
    # Only the box around both tumours matters (with room for the dilation): cheap on 1 mm grids.
    box = bounding_box(predicted | truth, margin=touch_voxels + 1)
    if box is None or not predicted.any():
        return []
    predicted, truth = predicted[box], truth[box]
    components, count = ndimage.label(predicted, CONNECTIVITY_26)
    voxel_cm3 = float(np.prod(spacing_mm)) / 1000.0
    sizes_cm3 = np.bincount(components.ravel(), minlength=count + 1) * voxel_cm3  # [0] = background
    if touch_voxels > 0 and truth.any():
        truth = ndimage.binary_dilation(truth, CONNECTIVITY_26, iterations=touch_voxels)
    touching = np.zeros(count + 1, bool)
    touching[np.unique(components[truth])] = True
    strays = [float(sizes_cm3[index]) for index in range(1, count + 1)
              if not touching[index] and sizes_cm3[index] >= min_cm3]
    return sorted(strays, reverse=True)
