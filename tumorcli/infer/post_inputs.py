"""What the predict-post nets see: a scan on the model grid as axial slices, in the model's
intensity units, and the way back. Shared by training (train/post_data) and inference.

Intensity units (`PostModelConfig.intensity`):
- "tissue": the scan divided by its median over normal tissue (brain, tumour grown by 6 mm
  excluded), 0 outside the brain: normal tissue ≈ 1 in every session, whatever the scanner gain.
- "zscore": the brain z-score of `infer.prepare` (models trained before "tissue").
"""

from __future__ import annotations

import numpy as np

from tumorcli.infer.prepare import Prepared
from tumorcli.preprocess.harmonise import normal_tissue, tissue_median_scale

INTENSITIES = ("tissue", "zscore")


def model_units(prepared: Prepared, tumour: np.ndarray, intensity: str
                ) -> tuple[np.ndarray, float, float]:
    """(image (X, Y, Z) on prepared.grid in model units, scale, offset): the scan's own units
    are image · scale + offset inside the brain. `tumour`: labels on prepared.grid."""
    if intensity == "zscore":
        return prepared.image[0], prepared.sds[0], prepared.means[0]
    raw = in_scan_units(prepared)
    normal = normal_tissue(prepared.brain, tumour, prepared.grid.spacing)
    scale = tissue_median_scale(raw, normal)
    return np.where(prepared.brain, raw / scale, 0).astype(np.float32), scale, 0.0


def in_scan_units(prepared: Prepared) -> np.ndarray:
    """The first channel of `prepared` back in the scan's units on prepared.grid, 0 outside."""
    return np.where(prepared.brain, prepared.image[0] * prepared.sds[0] + prepared.means[0],
                    0).astype(np.float32)


def volume_slices(volume: np.ndarray, keep: np.ndarray, multiple: int) -> np.ndarray:
    """(X, Y, Z) -> (K, 1, H, W): the kept axial slices, zero-padded to sides divisible by
    `multiple` (centred; `unpad` undoes it)."""
    slices = np.moveaxis(volume[:, :, keep], 2, 0)[:, None]
    height, width = (int(np.ceil(n / multiple)) * multiple for n in volume.shape[:2])
    top, left = (height - volume.shape[0]) // 2, (width - volume.shape[1]) // 2
    out = np.zeros((len(slices), 1, height, width), np.float32)
    out[:, :, top:top + volume.shape[0], left:left + volume.shape[1]] = slices
    return out


def unpad(slices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, ..., H, W) padded slices -> (K, ..., X, Y) as before `volume_slices`."""
    top, left = (slices.shape[-2] - shape[0]) // 2, (slices.shape[-1] - shape[1]) // 2
    return slices[..., top:top + shape[0], left:left + shape[1]]


def slices_to_volume(slices: np.ndarray, keep: np.ndarray, shape: tuple[int, int, int]
                     ) -> np.ndarray:
    """(K, H, W) padded slices of the kept axial positions -> (X, Y, Z), 0 elsewhere."""
    volume = np.zeros(shape, np.float32)
    volume[:, :, keep] = np.moveaxis(unpad(slices, shape[:2]), 0, 2)
    return volume
