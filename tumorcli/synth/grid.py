"""Grids of the synthetic cohort and the bridge to SimpleITK for resampling on them.

A grid (`tumorcli.io.itk.Grid`) is a shape plus an affine (voxel index -> RAS+ mm). The
atlas grid is BraTS's: SRI24, 240×240×155 at 1 mm, axes running towards L, P, S (affine
diag(-1, -1, 1), origin (0, 239, 0)). Other grids (the 2 mm "small" grid, the coarser growth
grid) are centred on it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from tumorcli.io.itk import Grid, from_sitk, to_sitk

BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
BRATS_SHAPE = (240, 240, 155)
SMALL_SHAPE = (96, 112, 80)  # at 2 mm: 192×224×160 mm, the whole head fits


def atlas_grid(spacing_mm: float = 1.0, shape: tuple[int, int, int] | None = None) -> Grid:
    """A grid with the atlas's axes and centre; 1 mm gives BraTS's 240×240×155 grid."""
    if shape is None:
        shape = tuple(int(np.ceil(n / spacing_mm)) for n in BRATS_SHAPE)
    centre_world = BRATS_AFFINE[:3, :3] @ ((np.array(BRATS_SHAPE) - 1) / 2) + BRATS_AFFINE[:3, 3]
    linear = BRATS_AFFINE[:3, :3] * spacing_mm
    origin = centre_world - linear @ ((np.array(shape) - 1) / 2)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, origin
    return Grid(tuple(int(n) for n in shape), affine)


def output_grid(size: str) -> Grid:
    """'full': BraTS 240×240×155 at 1 mm; 'small': 96×112×80 at 2 mm with the same centre."""
    return atlas_grid(1.0) if size == "full" else atlas_grid(2.0, SMALL_SHAPE)


def resample(array: np.ndarray, source: Grid, target: Grid, transform: sitk.Transform | None = None,
             *, linear: bool = True, default: float = 0.0) -> np.ndarray:
    """Resample `array` (on `source`) onto `target`; `transform` maps target mm -> source mm.

    Returns float32 for linear interpolation, the input dtype for nearest neighbour.
    """
    image = to_sitk(array.astype(np.float32) if linear else array, source.affine)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    out = sitk.Resample(image, target.reference(), transform or sitk.Transform(), interpolator,
                        default)
    return from_sitk(out)


def smooth_random_field(rng: np.random.Generator, grid: Grid, control_points: int,
                        channels: int = 1) -> np.ndarray:
    """A smooth zero-mean, unit-sd random field (X, Y, Z[, C]) on `grid`.

    Gaussian noise on a coarse lattice of `control_points` per axis, interpolated with cubic
    B-splines (separable, so cheap on a full grid): it varies on the scale of grid size /
    control_points.
    """
    coefficients = rng.standard_normal((control_points + 2,) * 3 + (channels,))
    bases = [_cubic_bspline_basis(n, control_points) for n in grid.shape]  # (n, cp + 2) each
    field = np.einsum("kc,abcz->abkz", bases[2], coefficients)
    field = np.einsum("jb,abkz->ajkz", bases[1], field)
    field = np.einsum("ia,ajkz->ijkz", bases[0], field).astype(np.float32)
    field -= field.mean(axis=(0, 1, 2))
    field /= np.maximum(field.std(axis=(0, 1, 2)), 1e-6)
    return field if channels > 1 else field[..., 0]


def _cubic_bspline_basis(samples: int, control_points: int) -> np.ndarray:
    """(samples, control_points + 2) weights of uniform cubic B-splines spanning the axis."""
    position = (np.arange(samples) + 0.5) / samples * (control_points - 1) + 1.0
    knots = np.arange(control_points + 2)
    t = np.abs(position[:, None] - knots[None, :])
    return np.where(t < 1, (4 - 6 * t**2 + 3 * t**3) / 6,
                    np.where(t < 2, (2 - t) ** 3 / 6, 0.0))
