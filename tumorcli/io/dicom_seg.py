"""DICOM SEG out of a tumour label map, and back, on the grid of the scan it was drawn on.

We write BINARY segmentations, one segment per label present: every SEG reader (3D Slicer via
dcmqi, OHIF, PACS viewers) supports BINARY, while LABELMAP (added to the standard in 2024) is
not yet widely read. BINARY segment numbers must run 1..n, so a label value that differs from
its segment number (e.g. BraTS 2021's ET = 4) is kept in the segment's TrackingID
("tumorcli label 4"); `read_dicom_seg` maps segments back through it.
"""

from __future__ import annotations

import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage, generate_uid

import tumorcli
from tumorcli.errors import BadInput, first_line
from tumorcli.io.atomic import atomic_file
from tumorcli.io.dicom import PATIENT_STUDY_TAGS, read_dicom_series
from tumorcli.io.volume import Volume

BRATS_LABELS = {1: "NETC", 2: "SNFH", 3: "ET"}
# SNOMED CT type and a display colour (RGB) for each BraTS sub-region name.
_REGION_CODES = {
    "NETC": (codes.SCT.Necrosis, (255, 0, 0)),  # necrotic tumour core
    "SNFH": (codes.SCT.Edema, (0, 200, 0)),  # surrounding FLAIR hyperintensity / oedema
    "ET": (codes.SCT.Neoplasm, (255, 220, 0)),  # enhancing tumour
}
GRID_TOLERANCE_MM = 1e-3
# Type-2 patient/study attributes highdicom copies from the source images; absent means empty.
_SOURCE_TYPE_2 = [keyword for keyword in PATIENT_STUDY_TAGS
                  if keyword not in ("StudyInstanceUID", "StudyDescription")]
_TRACKING_ID = re.compile(r"^tumorcli label (\d+)$")


def write_dicom_seg(mask: Volume, reference_dir, out_path, *, labels: dict[int, str] | None = None,
                    series: str | None = None) -> Path:
    """Write the label map `mask` as a DICOM SEG referencing the series in `reference_dir`.

    mask: integer labels (0 = background) on the reference series' grid; an exact axis
    flip/permutation of it is accepted. labels: name of each label value (default BraTS:
    1 NETC, 2 SNFH, 3 ET; others "label N"). Only labels present become segments.
    series: which series of `reference_dir` (see read_dicom_series). Returns out_path, written
    atomically. BadInput for an empty mask, non-integer labels, or a mask off the grid.
    """
    out_path = Path(out_path)
    source = mask.source or "mask"
    reference = read_dicom_series(reference_dir, series)
    label_map = _on_reference_grid(mask, reference.volume, source, reference_dir)
    present = [int(value) for value in np.unique(label_map) if value != 0]
    if not present:
        raise BadInput(f"{source}: the mask is empty (all voxels 0), so there is nothing to "
                       "segment", "check the segmentation step produced labels")
    names = labels if labels is not None else BRATS_LABELS
    frames = label_map.transpose(2, 1, 0)  # (slices, rows, columns), in reference.datasets order
    stacked = np.stack([frames == value for value in present], axis=-1)  # (K, rows, cols, S)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="tumorcli", family=codes.cid7162.ArtificialIntelligence, version=tumorcli.__version__)
    segments = [_segment(number, value, names.get(value, f"label {value}"), algorithm)
                for number, value in enumerate(present, start=1)]
    for dataset in reference.datasets:  # read just now for this call, so ours to complete
        for keyword in _SOURCE_TYPE_2:
            if keyword not in dataset:
                setattr(dataset, keyword, "")  # anonymised exports often drop them
    series_number = int(reference.datasets[0].get("SeriesNumber") or 0) + 1000
    try:
        segmentation = hd.seg.Segmentation(
            source_images=reference.datasets, pixel_array=stacked.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments, series_instance_uid=generate_uid(),
            series_number=series_number, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="tumorcli", manufacturer_model_name="tumorcli",
            software_versions=tumorcli.__version__, device_serial_number="0",
            content_label="TUMOUR", content_description="tumour sub-regions from tumorcli")
    except (ValueError, TypeError, AttributeError) as error:  # highdicom: reference lacks a tag
        raise BadInput(f"{reference_dir}: cannot serve as the source of a DICOM SEG "
                       f"({first_line(error)})",
                       "export the scan again with full headers") from None
    with atomic_file(out_path) as temporary:
        pydicom.dcmwrite(temporary, segmentation, enforce_file_format=True)
    return out_path


def read_dicom_seg(path, reference_dir, *, series: str | None = None) -> Volume:
    """Read a DICOM SEG as a label map on the grid of the series it segments.

    Returns a Volume with the same voxel order and affine as
    `read_dicom_series(reference_dir, series).volume`; voxel values are label values (0
    background). BadInput if the file is not a SEG, segments another series, or its segments
    overlap.
    """
    path = Path(path)
    segmentation = _read_segmentation(path)
    reference = read_dicom_series(reference_dir, series)
    series_uid = str(reference.datasets[0].SeriesInstanceUID)
    referenced = {str(item.SeriesInstanceUID)
                  for item in segmentation.get("ReferencedSeriesSequence", [])}
    if series_uid not in referenced:
        raise BadInput(f"{path}: segments series {', '.join(sorted(referenced)) or '(none)'}, "
                       f"not {reference.info.summary()} in {reference_dir}",
                       "pass the folder (and --series) of the scan the segmentation was drawn on")
    source_uids = [str(dataset.SOPInstanceUID) for dataset in reference.datasets]
    outside = {uid for _, _, uid in segmentation.get_source_image_uids()} - set(source_uids)
    if outside:
        raise BadInput(f"{path}: references {len(outside)} image(s) that are not in "
                       f"{reference.info.summary()}",
                       "pass the complete series the segmentation was drawn on")
    try:
        frames = segmentation.get_pixels_by_source_instance(
            source_uids, combine_segments=True, relabel=False,
            assert_missing_frames_are_empty=True, dtype=np.uint16)  # (K, rows, cols)
    except (RuntimeError, ValueError, KeyError) as error:  # overlapping/fractional/unreferenced
        raise BadInput(f"{path}: cannot be read as one label map ({first_line(error)})",
                       "segments must be binary, non-overlapping and reference the scan's "
                       "images frame by frame") from None
    values = _label_values(segmentation)
    lookup = np.zeros(max(values, default=0) + 1, dtype=np.uint16)
    lookup[list(values)] = list(values.values())
    label_map = lookup[frames].transpose(2, 1, 0)  # (columns, rows, slices) = (i, j, k)
    dtype = np.uint8 if label_map.max(initial=0) <= 255 else np.uint16
    return Volume(array=label_map.astype(dtype), affine=reference.volume.affine.copy(),
                  header=None, source=str(path))


def _on_reference_grid(mask: Volume, grid: Volume, source: str, reference_dir) -> np.ndarray:
    """The mask's labels in the reference's voxel order; BadInput if it is not on that grid."""
    if mask.array.ndim != 3:
        raise BadInput(f"{source}: has {mask.array.ndim} dimensions but a mask needs 3",
                       "pass one 3D label map")
    matched = mask.reoriented(grid.orientation)
    corners = np.array([[i, j, k, 1] for i in (0, grid.shape[0] - 1)
                        for j in (0, grid.shape[1] - 1) for k in (0, grid.shape[2] - 1)]).T
    same_shape = matched.shape == grid.shape
    offset_mm = float(np.abs((matched.affine - grid.affine) @ corners).max()) if same_shape else 0
    if not same_shape or offset_mm > GRID_TOLERANCE_MM:
        found = f"shape {matched.shape}" if not same_shape else f"corners {offset_mm:.3g} mm off"
        raise BadInput(f"{source}: the mask is not on the grid of the reference series in "
                       f"{reference_dir} ({found}; the scan is {'x'.join(map(str, grid.shape))} "
                       f"voxels of {'x'.join(f'{s:.3g}' for s in grid.spacing)} mm)",
                       "resample the mask onto the scan first")
    values = np.asarray(matched.array)
    if not np.issubdtype(values.dtype, np.integer) and values.dtype != np.bool_:
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise BadInput(f"{source}: the mask holds non-integer values",
                           "pass a label map (0 background, 1, 2, 3, ...), not probabilities")
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise BadInput(f"{source}: mask labels must lie between 0 and 65535",
                       "pass a label map (0 background, 1, 2, 3, ...)")
    return values.astype(np.uint16)


def _segment(number: int, value: int, name: str, algorithm) -> hd.seg.SegmentDescription:
    property_type, rgb = _REGION_CODES.get(name.upper(), (codes.SCT.Lesion, None))
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=name[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_id=f"tumorcli label {value}", tracking_uid=generate_uid(),
        anatomic_regions=[codes.SCT.Brain],
        display_color=hd.color.CIELabColor.from_rgb(*rgb) if rgb else None)


def _read_segmentation(path: Path) -> hd.seg.Segmentation:
    if not path.is_file():
        raise BadInput(f"{path}: file not found", "check the path and spelling")
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # not DICOM, or damaged
        raise BadInput(f"{path}: not a readable DICOM file ({first_line(error)})",
                       "give a DICOM SEG file (.dcm)") from None
    if dataset.get("SOPClassUID") != SegmentationStorage:
        kind = getattr(dataset.get("SOPClassUID"), "name", "an unknown object")
        raise BadInput(f"{path}: is {kind}, not a DICOM Segmentation",
                       "give a DICOM SEG file (.dcm)")
    try:
        return hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as error:  # highdicom raises many types for malformed SEGs
        raise BadInput(f"{path}: malformed DICOM SEG ({first_line(error)})",
                       "export the segmentation again") from None


def _label_values(segmentation: hd.seg.Segmentation) -> dict[int, int]:
    """Segment number -> label value: from our TrackingID, else the segment number itself."""
    values = {}
    for number in segmentation.segment_numbers:
        tracking = segmentation.get_segment_description(number).tracking_id or ""
        match = _TRACKING_ID.match(tracking)
        values[number] = int(match.group(1)) if match else number
    return values
