"""How good a preprocessing run is, against known truth (the synthetic cohort's transforms).

Used by the tests and `benchmarks/preprocess_speed.py`. The synthetic cohort's
`<session>-transforms.json` gives, per modality, `native_to_atlas_world`: native scanner RAS mm
-> the subject's atlas-grid RAS mm. All matrices here are 4×4 RAS mm -> RAS mm.
"""

from __future__ import annotations

import numpy as np

from tumorcli.metrics.overlap import Overlap


def points_of(mask: np.ndarray, affine: np.ndarray, step: int = 1) -> np.ndarray:
    """World RAS mm (N, 3) of the mask's voxels (every `step`-th along each axis)."""
    index = np.argwhere(mask[::step, ::step, ::step]) * step
    return index @ affine[:3, :3].T + affine[:3, 3]


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def coregistration_error_mm(estimated_t1c_to_native: np.ndarray, true_native_to_atlas: dict,
                            modality: str, brain_points_atlas: np.ndarray) -> float:
    """Mean distance (mm) between where we and the truth put brain points of the T1c in the
    modality's native space.

    estimated_t1c_to_native: our T1c mm -> modality mm; true_native_to_atlas: modality ->
    native_to_atlas_world matrix; brain_points_atlas: (N, 3) brain points on the atlas grid.
    """
    t1c_points = apply(np.linalg.inv(true_native_to_atlas["t1c"]), brain_points_atlas)
    truth = apply(np.linalg.inv(true_native_to_atlas[modality]), brain_points_atlas)
    ours = apply(estimated_t1c_to_native, t1c_points)
    return float(np.linalg.norm(ours - truth, axis=1).mean())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    true_positive = int((a & b).sum())
    return Overlap(true_positive, int((a & ~b).sum()), int((~a & b).sum())).dice


def white_matter_cov(image: np.ndarray, white_matter: np.ndarray) -> float:
    """Coefficient of variation (sd / mean) inside a white-matter mask."""
    inside = image[white_matter].astype(np.float64)
    return float(inside.std() / max(abs(inside.mean()), 1e-12))
