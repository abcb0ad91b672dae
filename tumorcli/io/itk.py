"""The bridge between tumorcli's RAS+ arrays and SimpleITK's LPS images and transforms.

tumorcli arrays are (X, Y, Z[, C]) with a (4, 4) affine voxel index -> RAS+ mm; SimpleITK keeps
(Z, Y, X) buffers with origin/spacing/direction in LPS mm. Everything that crosses between the
two (the synthetic cohort, preprocessing) goes through here, so the sign flips live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from tumorcli.io.volume import Volume

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, its own inverse


@dataclass(frozen=True)
class Grid:
    """A sampling grid. shape: voxels along i, j, k; affine: (4, 4) voxel index -> RAS+ mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @staticmethod
    def of(volume: Volume) -> "Grid":
        return Grid(tuple(int(n) for n in volume.shape[:3]), volume.affine)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_cm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def world(self, index) -> np.ndarray:
        """RAS mm of voxel index/indices (..., 3)."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def reference(self) -> sitk.Image:
        """An empty SimpleITK image on this grid, for sitk.Resample(..., reference, ...)."""
        image = sitk.Image([int(n) for n in self.shape], sitk.sitkUInt8)
        set_geometry(image, self.affine)
        return image

    def with_spacing(self, spacing_mm: float) -> "Grid":
        """The same field of view and axes sampled at `spacing_mm` (centres kept)."""
        old = np.array(self.spacing)
        shape = np.maximum(1, np.round(old * np.array(self.shape) / spacing_mm)).astype(int)
        linear = self.affine[:3, :3] / old * spacing_mm
        centre = self.world((np.array(self.shape) - 1) / 2)
        affine = np.eye(4)
        affine[:3, :3] = linear
        affine[:3, 3] = centre - linear @ ((shape - 1) / 2)
        return Grid(tuple(int(n) for n in shape), affine)

    def cropped(self, low, high) -> "Grid":
        """The sub-grid of voxels low..high-1 (clipped to the grid); voxels stay where they were."""
        low = np.clip(np.asarray(low, int), 0, self.shape)
        high = np.clip(np.asarray(high, int), low + 1, self.shape)
        affine = self.affine.copy()
        affine[:3, 3] = self.world(low)
        return Grid(tuple(int(n) for n in high - low), affine)


def set_geometry(image: sitk.Image, affine: np.ndarray) -> None:
    """Give `image` the origin, spacing and direction of a RAS affine."""
    lps = LPS[:3, :3] @ affine[:3, :4]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """(X, Y, Z) or (X, Y, Z, C) array + RAS affine -> SimpleITK (vector) image; bool as uint8."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0))),
                                   isVector=array.ndim == 4)
    set_geometry(image, affine)
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> (X, Y, Z[, C]) array."""
    array = sitk.GetArrayFromImage(image)
    return np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)))


def affine_of(image: sitk.Image) -> np.ndarray:
    """The (4, 4) voxel index -> RAS mm affine of a SimpleITK image."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return LPS @ affine


def transform_from_ras(matrix: np.ndarray) -> sitk.AffineTransform:
    """A (4, 4) RAS mm -> RAS mm map as the same map in ITK's LPS physical space."""
    lps = LPS @ np.asarray(matrix, dtype=np.float64) @ LPS
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(lps[:3, :3].ravel().tolist())
    transform.SetTranslation(lps[:3, 3].tolist())
    return transform


def ras_matrix(transform: sitk.Transform) -> np.ndarray:
    """The (4, 4) RAS mm -> RAS mm matrix of an affine-family SimpleITK transform."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    centre = np.array(transform.GetCenter())
    translation = np.array(transform.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + centre - matrix @ centre
    return LPS @ lps @ LPS
