"""Geometry of a DICOM series: slice order, spacing checks, and the voxel -> world affine.

DICOM patient coordinates are LPS (x towards the patient's left, y posterior, z superior);
tumorcli volumes are RAS+, so x and y change sign at the boundary (`LPS_TO_RAS`).

Voxel (i, j, k) of a volume read from DICOM is column i, row j of the k-th slice, slices
sorted along the normal (row cosine x column cosine). Its LPS position is
    IPP[0] + i * PixelSpacing[1] * row_cosine + j * PixelSpacing[0] * column_cosine + k * step
where `step` is (last position - first position) / (n - 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorcli.errors import BadInput

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
ORIENTATION_TOLERANCE = 1e-4  # cosines; scanners write them with ~6 decimals
DUPLICATE_MM = 1e-3  # two slices closer than this along the normal share a position
PERPENDICULAR_COSINE = 1e-4  # |cos| between axes that DICOM needs perpendicular (~0.006°)


def spacing_tolerance_mm(spacing_mm: float) -> float:
    """How far a slice gap may differ from the usual spacing: 1 % of it plus 1 µm."""
    return 0.01 * spacing_mm + 1e-3


@dataclass(frozen=True)
class SlicePlane:
    """Where one single-frame DICOM image lies, in LPS mm."""

    rows: int
    columns: int
    row_cosine: np.ndarray  # (3,) direction of increasing column index (along a row)
    column_cosine: np.ndarray  # (3,) direction of increasing row index (down a column)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    position: np.ndarray  # (3,) ImagePositionPatient: centre of the first pixel

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)


def slice_plane(dataset, path: Path) -> SlicePlane:
    """Read the geometry tags of one image; BadInput naming the file if any is missing."""
    missing = [tag for tag in ("ImagePositionPatient", "ImageOrientationPatient",
                               "PixelSpacing", "Rows", "Columns")
               if dataset.get(tag) in (None, "")]
    if missing:
        raise BadInput(f"{path}: missing the geometry tag(s) {', '.join(missing)}, so its "
                       "position in the patient is unknown",
                       "export the series again from the scanner or PACS with full headers")
    try:
        orientation = np.array([float(v) for v in dataset.ImageOrientationPatient])
        position = np.array([float(v) for v in dataset.ImagePositionPatient])
        spacing = tuple(float(v) for v in dataset.PixelSpacing)
    except (TypeError, ValueError) as error:
        raise BadInput(f"{path}: unreadable geometry tag ({error})",
                       "export the series again from the scanner or PACS") from None
    if orientation.shape != (6,) or position.shape != (3,) or len(spacing) != 2 \
            or min(spacing) <= 0 or not np.all(np.isfinite(orientation)):
        raise BadInput(f"{path}: invalid ImageOrientationPatient/ImagePositionPatient/"
                       "PixelSpacing values", "export the series again from the scanner or PACS")
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row_cosine) - 1) > 1e-3 or abs(np.linalg.norm(column_cosine) - 1) > 1e-3:
        raise BadInput(f"{path}: ImageOrientationPatient does not hold two unit vectors",
                       "export the series again from the scanner or PACS")
    return SlicePlane(int(dataset.Rows), int(dataset.Columns),
                      row_cosine / np.linalg.norm(row_cosine),
                      column_cosine / np.linalg.norm(column_cosine), spacing, position)


def stack_order(planes: list[SlicePlane], names: list[str], where: Path) -> np.ndarray:
    """Indices that sort the slices along the normal, after checking they form one volume.

    names: one label per slice for messages (file and instance number).
    Raises BadInput for mixed orientations or sizes, duplicate positions, missing slices,
    uneven spacing, or slice positions off a straight line.
    """
    first = planes[0]
    for plane, name in zip(planes, names):
        if (plane.rows, plane.columns) != (first.rows, first.columns) \
                or not np.allclose(plane.pixel_spacing, first.pixel_spacing, atol=1e-4):
            raise BadInput(
                f"{where}: slices differ in matrix size or pixel spacing ({first.rows}x"
                f"{first.columns} at {_mm(first.pixel_spacing)} mm in {names[0]}, {plane.rows}x"
                f"{plane.columns} at {_mm(plane.pixel_spacing)} mm in {name})",
                "the series mixes acquisitions; export each one as its own series")
        orientation_change = max(np.abs(plane.row_cosine - first.row_cosine).max(),
                                 np.abs(plane.column_cosine - first.column_cosine).max())
        if orientation_change > ORIENTATION_TOLERANCE:
            raise BadInput(
                f"{where}: slices have mixed orientations (ImageOrientationPatient "
                f"{_cosines(first)} in {names[0]}, {_cosines(plane)} in {name})",
                "this is not one volume (e.g. a 3-plane localizer); choose another series")
    normal = first.normal
    distances = np.array([plane.position @ normal for plane in planes])
    order = np.argsort(distances, kind="stable")
    if len(planes) > 1:
        _check_spacing(distances[order], [names[i] for i in order], where)
        _check_straight_line(np.array([planes[i].position for i in order]),
                             [names[i] for i in order], where)
    return order


def _check_spacing(distances: np.ndarray, names: list[str], where: Path) -> None:
    gaps = np.diff(distances)  # (n-1,) mm along the normal, sorted so all >= 0
    duplicates = np.flatnonzero(gaps < DUPLICATE_MM)
    if duplicates.size:
        a = duplicates[0]
        sharing = len(set(duplicates) | set(duplicates + 1))
        raise BadInput(
            f"{where}: {sharing} slices "
            f"share a position with another slice (e.g. {names[a]} and {names[a + 1]} at "
            f"{distances[a]:.2f} mm along the normal): a multi-echo or repeated acquisition?",
            "export each echo or repetition as its own series, or convert the folder with "
            "dcm2niix, which splits them")
    usual = float(np.median(gaps))
    tolerance = spacing_tolerance_mm(usual)
    missing, uneven = [], []
    for index, gap in enumerate(gaps):
        if abs(gap - usual) <= tolerance:
            continue
        multiple = int(round(gap / usual))
        if multiple >= 2 and abs(gap - multiple * usual) <= tolerance * multiple:
            missing.append(f"{multiple - 1} between {names[index]} at {distances[index]:.2f} mm "
                           f"and {names[index + 1]} at {distances[index + 1]:.2f} mm")
        else:
            uneven.append(f"{gap:.3f} mm between {names[index]} and {names[index + 1]}")
    if missing:
        count = sum(int(text.split()[0]) for text in missing)
        raise BadInput(f"{where}: {count} slice(s) missing from the series (usual spacing "
                       f"{usual:.3f} mm): {'; '.join(missing[:5])}"
                       + (f"; and {len(missing) - 5} more gaps" if len(missing) > 5 else ""),
                       "copy or export the complete series again; every slice is needed to "
                       "build a volume")
    if uneven:
        raise BadInput(f"{where}: uneven slice spacing: usually {usual:.3f} mm but "
                       f"{'; '.join(uneven[:5])}",
                       "check the series holds one complete acquisition; dcm2niix can convert "
                       "series with variable spacing")


def _check_straight_line(positions: np.ndarray, names: list[str], where: Path) -> None:
    # Even spacing along the normal can hide an in-plane shift, which one step cannot describe.
    count = len(positions)
    step = (positions[-1] - positions[0]) / (count - 1)
    expected = positions[0] + np.arange(count)[:, None] * step
    off = np.linalg.norm(positions - expected, axis=1)  # (n,) mm
    worst = int(np.argmax(off))
    if off[worst] > spacing_tolerance_mm(float(np.linalg.norm(step))):
        raise BadInput(f"{where}: slice positions do not lie on a straight line "
                       f"({names[worst]} is {off[worst]:.3f} mm off)",
                       "check the series holds one acquisition")


def affine_ras(planes_in_order: list[SlicePlane], single_slice_mm: float | None,
               where: Path) -> np.ndarray:
    """(4, 4) voxel (i=column, j=row, k=slice) -> RAS+ mm, from slices sorted along the normal.

    single_slice_mm: slice spacing for a one-slice series (SpacingBetweenSlices/SliceThickness).
    A gantry tilt gives a sheared (still exact) affine: the step follows the real positions.
    """
    first, last = planes_in_order[0], planes_in_order[-1]
    count = len(planes_in_order)
    if count > 1:
        step = (last.position - first.position) / (count - 1)
    elif single_slice_mm:
        step = first.normal * single_slice_mm
    else:
        raise BadInput(f"{where}: a single slice without SpacingBetweenSlices or SliceThickness, "
                       "so its thickness is unknown", "export the series again with full headers")
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = first.row_cosine * first.pixel_spacing[1]
    affine_lps[:3, 1] = first.column_cosine * first.pixel_spacing[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = first.position
    return LPS_TO_RAS @ affine_lps


@dataclass(frozen=True)
class SeriesLayout:
    """How to write a volume as single-frame slices (all LPS mm)."""

    row_cosine: np.ndarray  # (3,)
    column_cosine: np.ndarray  # (3,)
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    slice_spacing: float
    positions: np.ndarray  # (K, 3) ImagePositionPatient of each written slice
    reverse_k: bool  # write slices k = K-1 ... 0 so that they ascend along the normal


def series_layout(affine: np.ndarray, shape: tuple[int, int, int], source: str) -> SeriesLayout:
    """Slice planes for a volume with RAS `affine`; BadInput if DICOM cannot represent the grid.

    DICOM single-frame images need perpendicular rows and columns and (to be read back as the
    same grid) slices stacked along their normal. A k axis that runs against the normal
    (a left-handed grid such as LAS) is written in reverse slice order.
    """
    affine_lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    axes = affine_lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if not np.all(np.isfinite(affine_lps)) or np.any(spacing < 1e-9):
        raise BadInput(f"{source}: the affine is invalid (non-finite or zero voxel size)",
                       "fix the image header before exporting it to DICOM")
    row_cosine, column_cosine, slice_direction = (axes / spacing).T
    normal = np.cross(row_cosine, column_cosine)
    shear = max(abs(row_cosine @ column_cosine), abs(slice_direction @ row_cosine),
                abs(slice_direction @ column_cosine))
    if shear > PERPENDICULAR_COSINE:
        angle = np.degrees(np.arcsin(min(1.0, shear)))
        raise BadInput(f"{source}: the voxel grid is sheared ({angle:.3f}° from perpendicular), "
                       "which DICOM images cannot represent",
                       "resample the image onto a perpendicular grid first")
    reverse_k = float(slice_direction @ normal) < 0
    count = shape[2]
    ks = np.arange(count)[::-1] if reverse_k else np.arange(count)
    positions = (affine_lps @ np.stack([np.zeros(count), np.zeros(count), ks, np.ones(count)]))
    return SeriesLayout(row_cosine, column_cosine, (float(spacing[1]), float(spacing[0])),
                        float(spacing[2]), positions[:3].T, bool(reverse_k))


def _mm(values) -> str:
    return "x".join(f"{float(v):g}" for v in values)


def _cosines(plane: SlicePlane) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in (*plane.row_cosine, *plane.column_cosine)) + "]"
