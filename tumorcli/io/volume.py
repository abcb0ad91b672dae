"""NIfTI volumes: an array on a grid, read with nibabel, written atomically on the same grid.

A `Volume` is the array plus the affine that maps voxel indices (i, j, k) to RAS+ world
millimetres, and the source header so that a saved file keeps its qform/sform codes, units and
description. Orientation changes are exact axis flips/permutations (no resampling) and can be
undone bit for bit.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations

from tumorcli.errors import BadInput, first_line
from tumorcli.io.atomic import atomic_file

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D (or 4D) image on a grid.

    array:  (X, Y, Z[, T]) voxels along the affine's i, j, k axes.
    affine: (4, 4) voxel index -> RAS+ world position in mm.
    header: the NIfTI header it came from (None for new volumes).
    source: where it was read from, for error messages.
    """

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = field(default=None, repr=False)
    source: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (length of each affine column)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³; correct for oblique and anisotropic grids."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def orientation(self) -> str:
        """The closest anatomical axis codes, e.g. 'RAS' or 'LPI'."""
        return "".join(orientations.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray) -> "Volume":
        """The same grid holding other voxels (e.g. a mask computed from this image)."""
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"array shape {array.shape} does not match grid {self.array.shape}")
        return replace(self, array=array)

    def reoriented(self, axcodes: str = "RAS") -> "Volume":
        """The same voxels with axes flipped/permuted so that they run along `axcodes`.

        Exact (no interpolation); `v.reoriented("RAS").reoriented(v.orientation)` gives back
        v's array and affine.
        """
        current = orientations.io_orientation(self.affine)
        wanted = orientations.axcodes2ornt(tuple(axcodes.upper()))
        transform = orientations.ornt_transform(current, wanted)
        array = orientations.apply_orientation(self.array, transform)
        affine = self.affine @ orientations.inv_ornt_aff(transform, self.array.shape[:3])
        return replace(self, array=np.ascontiguousarray(array), affine=affine)


def is_nifti_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_volume(path: str | os.PathLike, *, ndim: int | None = 3) -> Volume:
    """Read a NIfTI file into a Volume.

    ndim: 3 requires a 3D image (a trailing singleton 4th axis is dropped); None accepts any.
    Raises BadInput naming the file for a missing, non-NIfTI, truncated or wrong-shape file.
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: file not found", "check the path and spelling")
    if path.is_dir():
        raise BadInput(f"{path}: is a folder, not a NIfTI file",
                       "give a .nii/.nii.gz file; for a DICOM folder use `tumor convert`")
    if not is_nifti_path(path):
        raise BadInput(f"{path}: not a NIfTI file name (expected .nii or .nii.gz)",
                       "convert DICOM with `tumor convert`, or rename the file if it is NIfTI")
    try:
        image = nib.load(str(path))
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise BadInput(f"{path}: not a NIfTI image", "give a NIfTI-1 or NIfTI-2 file")
        array = np.asanyarray(image.dataobj)
    except BadInput:
        raise
    except Exception as error:  # nibabel raises many types for foreign or damaged files
        raise _unreadable(path, error) from None
    if ndim == 3:
        while array.ndim > 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 3:
            shape = "x".join(str(n) for n in array.shape)
            raise BadInput(f"{path}: has {array.ndim} dimensions (shape {shape}) but a 3D "
                           "volume is needed", "pass one 3D volume per file (split 4D series first)")
    affine = image.affine.astype(np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise BadInput(f"{path}: the header's affine is invalid (non-finite or zero voxel size)",
                       "fix the qform/sform in the header or re-export the image")
    return Volume(array=array, affine=affine, header=image.header, source=str(path))


def sensible_dtype(array: np.ndarray) -> np.dtype:
    """On-disk dtype: floats as float32, integers/bools in the smallest type that holds them."""
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return np.dtype(np.float32)
    if array.dtype in (np.uint8, np.int16, np.uint16, np.int32, np.float32):
        return array.dtype
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for candidate in (np.uint8, np.int16, np.int32):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.int64)


def save_volume(volume: Volume, path: str | os.PathLike, *, dtype=None) -> Path:
    """Write `volume` as NIfTI on its own grid, atomically (temp file, then rename).

    Keeps the source header's qform/sform codes, units and description; new volumes get
    scanner-anatomical codes. dtype: on-disk type (default: `sensible_dtype`).
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise BadInput(f"{path}: output must end in .nii or .nii.gz", "choose a NIfTI file name")
    dtype = np.dtype(dtype) if dtype is not None else sensible_dtype(volume.array)
    array = np.asarray(volume.array).astype(dtype, copy=False)
    header = volume.header.copy() if volume.header is not None else nib.Nifti1Header()
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    if qform_code == 0 and sform_code == 0:  # new volume, or a header that stored no affine
        qform_code = sform_code = 1
    header.set_data_dtype(dtype)
    header.set_slope_inter(None, None)
    image = nib.Nifti1Image(array, volume.affine, header=header)
    image.set_qform(volume.affine, code=qform_code)
    image.set_sform(volume.affine, code=sform_code)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_file(path) as temporary:
        nib.save(image, str(temporary))
    return path


def _unreadable(path: Path, error: Exception) -> BadInput:
    """Translate nibabel/gzip failures into what the user needs to know."""
    reason = first_line(error)
    if isinstance(error, (EOFError, zlib.error)) or ("Expected" in reason and "bytes" in reason):
        return BadInput(f"{path}: file is truncated (the data end before all voxels are read)",
                        "copy or export the file again")
    if "not a gzip file" in reason:
        return BadInput(f"{path}: not a NIfTI file (named .gz but not gzip-compressed)",
                        "check what the file really is; re-export it as NIfTI")
    if "Cannot work out file type" in reason:
        return BadInput(f"{path}: not a NIfTI file (no NIfTI header found)",
                        "check what the file really is; re-export it as NIfTI")
    return BadInput(f"{path}: not a readable NIfTI file ({reason.replace(str(path), 'file')})",
                    "re-export the image as NIfTI, or convert DICOM with `tumor convert`")
