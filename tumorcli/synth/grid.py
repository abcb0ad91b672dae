"""Grids of the synthetic cohort and the bridge to SimpleITK for resampling on them.

A grid is a shape plus an affine (voxel index -> RAS+ mm), as in `tumorcli.io.volume`. The
atlas grid is BraTS's: SRI24, 240×240×155 at 1 mm, axes running towards L, P, S (affine
diag(-1, -1, 1), origin (0, 239, 0)). Other grids (the 2 mm "small" grid, the coarser growth
grid) are centred on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
BRATS_SHAPE = (240, 240, 155)
SMALL_SHAPE = (96, 112, 80)  # at 2 mm: 192×224×160 mm, the whole head fits
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK's physical space)


@dataclass(frozen=True)
class Grid:
    """shape: voxels along i, j, k; affine: (4, 4) voxel index -> RAS+ mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_cm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def reference(self) -> sitk.Image:
        """An empty SimpleITK image on this grid, for sitk.Resample(..., reference, ...)."""
        image = sitk.Image([int(n) for n in self.shape], sitk.sitkUInt8)
        _set_geometry(image, self.affine)
        return image

    def world(self, index) -> np.ndarray:
        """RAS mm of voxel index/indices (..., 3)."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]


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


def _set_geometry(image: sitk.Image, affine: np.ndarray) -> None:
    lps = _LPS[:3, :3] @ affine[:3, :4]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """(X, Y, Z) or (X, Y, Z, C) array + RAS affine -> SimpleITK (vector) image."""
    array = np.asarray(array)
    is_vector = array.ndim == 4
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0))),
                                   isVector=is_vector)
    _set_geometry(image, affine)
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> (X, Y, Z[, C]) array."""
    array = sitk.GetArrayFromImage(image)
    return np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)))


def ras_to_itk_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """A 4×4 RAS mm -> RAS mm map as the same map in ITK's LPS physical space."""
    lps = _LPS @ np.asarray(matrix, dtype=np.float64) @ _LPS
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(lps[:3, :3].ravel().tolist())
    transform.SetTranslation(lps[:3, 3].tolist())
    return transform


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


def cropped(grid: Grid, low: np.ndarray, high: np.ndarray) -> Grid:
    """The sub-grid of voxels low..high-1 (inclusive-exclusive index bounds)."""
    low = np.clip(np.asarray(low, int), 0, grid.shape)
    high = np.clip(np.asarray(high, int), low + 1, grid.shape)
    affine = grid.affine.copy()
    affine[:3, 3] = grid.world(low)
    return Grid(tuple(int(n) for n in high - low), affine)
