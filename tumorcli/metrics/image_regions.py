"""Scoring a predicted follow-up where treatment acts and where it does not.

- `tissue_normalised`: an image divided by its median over normal tissue (brain voxels that are
  tumour in neither session): every scanner has its own gain, and normal tissue is what two
  sessions share, so after this the scores measure the disease's change. (A brain percentile
  match does not: a pre-op scan's bright rim moves its top percentile.)
- `region_masks`: "tumour" = brain ∩ (labels of either session, dilated by 3 voxels), "rest" =
  the brain without it.
"""

from __future__ import annotations

import numpy as np

TUMOUR_DILATION_VOXELS = 3
REGIONS = ("tumour", "rest")
REGION_COLUMNS = tuple(f"{metric}_3d_{region}" for region in REGIONS
                       for metric in ("psnr", "ssim"))


def tissue_normalised(image: np.ndarray, brain: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float32 image / its median over brain voxels outside `labels` (> 0); 0 outside the
    brain. The median of the whole brain is used when no voxel is outside the labels."""
    from tumorcli.preprocess.harmonise import tissue_median_scale

    normal = brain & ~(labels > 0)
    scale = tissue_median_scale(image, normal if normal.any() else brain)
    return np.where(brain, image / scale, 0).astype(np.float32)


def region_masks(brain: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """{"tumour": brain ∩ labels dilated by TUMOUR_DILATION_VOXELS, "rest": the other brain}."""
    from scipy import ndimage

    grown = ndimage.binary_dilation(labels > 0, ndimage.generate_binary_structure(3, 1),
                                    iterations=TUMOUR_DILATION_VOXELS)
    return {"tumour": brain & grown, "rest": brain & ~grown}


def region_scores(pred: np.ndarray, ref: np.ndarray, brain: np.ndarray, labels: np.ndarray,
                  data_range: float | None = None) -> dict[str, float]:
    """REGION_COLUMNS: 3D PSNR (dB, over the region's voxels) and SSIM (over windows centred
    in it) in each region, with the brain's data range (reference max − min over the brain)
    unless one is given, so the regions' scores share one scale. NaN for an empty region."""
    from tumorcli.metrics.image import default_data_range, psnr, ssim

    peak = data_range if data_range is not None else default_data_range(ref, brain)
    scores = {}
    for region, mask in region_masks(brain, labels).items():
        empty = not mask.any()
        scores[f"psnr_3d_{region}"] = float("nan") if empty else psnr(pred, ref, mask, peak)
        scores[f"ssim_3d_{region}"] = float("nan") if empty else ssim(pred, ref, mask, peak)
    return scores
