"""Intensity matching of two scans of one patient on normal tissue (brain voxels that are
tumour in neither scan), so that what differs between them is the disease, not the scanner.

- `tissue_median_scale`: divide a scan by its median over normal tissue. Each scan has its own
  arbitrary global gain; the median of normal tissue does not move when a tumour grows, shrinks
  or is resected (a brain z-score or a top percentile does: a bright pre-op rim moves both).
- `relative_bias`: the smooth multiplicative field by which one scan differs from another on
  normal tissue (two bias fields' ratio), filled in across the tumour by normalised
  convolution. Dividing the follow-up by it puts it in the pre scan's scanner conditions.

Plain functions on (X, Y, Z) arrays and a voxel spacing in mm.
"""

from __future__ import annotations

import numpy as np

NORMAL_MARGIN_MM = 6.0      # tumour labels grown by this before they count as not normal
BIAS_SIGMA_MM = 20.0        # the simulator's and a scanner's bias fields vary over ≥ 5 cm


def normal_tissue(brain: np.ndarray, tumour: np.ndarray, spacing_mm, margin_mm: float =
                  NORMAL_MARGIN_MM) -> np.ndarray:
    """brain & not (tumour grown by `margin_mm`): (X, Y, Z) bool. `tumour` is any label > 0
    (pass the union of both sessions' labels when both are known)."""
    from scipy import ndimage

    tumour = np.asarray(tumour) > 0
    if margin_mm > 0 and tumour.any():
        radius = np.maximum(np.round(margin_mm / np.asarray(spacing_mm, float)), 1).astype(int)
        grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
        ball = sum((g / max(r, 1)) ** 2 for g, r in zip(grid, radius)) <= 1.0
        tumour = ndimage.binary_dilation(tumour, ball)
    normal = np.asarray(brain, bool) & ~tumour
    return normal if normal.sum() >= 100 else np.asarray(brain, bool)


def tissue_median_scale(image: np.ndarray, normal: np.ndarray) -> float:
    """The median of `image` over `normal` voxels with signal (> 0); 1.0 if there are none."""
    values = np.asarray(image)[normal]
    values = values[values > 0]
    return float(np.median(values)) if len(values) else 1.0


def relative_bias(image: np.ndarray, reference: np.ndarray, normal: np.ndarray, spacing_mm,
                  sigma_mm: float = BIAS_SIGMA_MM) -> np.ndarray:
    """Smooth field B (X, Y, Z), mean 1 over `normal`, with image ≈ B · reference there (both
    already divided by their tissue medians). image / B has the reference's bias field."""
    from scipy import ndimage

    ok = normal & (image > 0) & (reference > 0)
    if ok.sum() < 100:
        return np.ones(image.shape, np.float32)
    log_ratio = np.zeros(image.shape, np.float32)
    log_ratio[ok] = np.log(image[ok] / reference[ok])
    sigma = [sigma_mm / float(s) for s in np.broadcast_to(np.asarray(spacing_mm, float), (3,))]
    weight = ndimage.gaussian_filter(ok.astype(np.float32), sigma, mode="constant")
    smooth = ndimage.gaussian_filter(log_ratio, sigma, mode="constant")
    field = smooth / np.maximum(weight, 1e-3)
    field -= float(field[ok].mean())
    return np.exp(field).astype(np.float32)
