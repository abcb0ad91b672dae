"""DICOM series in and out: find the series in a folder, read one as a Volume, write a Volume.

Reading accepts single-frame image series (one file per slice), checks that the slices form one
regular volume, and reports anything else (missing or duplicate slices, mixed orientations,
multi-frame files, undecodable compression) as BadInput naming the folder or file.
Geometry lives in `dicom_geometry`: affines here are RAS+ mm like every tumorcli Volume.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from tumorcli.errors import BadInput, first_line
from tumorcli.io import dicom_geometry as geometry
from tumorcli.io import dicom_pixels as pixels
from tumorcli.io.atomic import atomic_folder
from tumorcli.io.volume import Volume
from tumorcli.progress import task

# Copied from a reference series onto what we write. All are type 2 (present, maybe empty):
# highdicom's Segmentation needs them on its source images.
PATIENT_STUDY_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                      "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                      "ReferringPhysicianName", "StudyID", "StudyDescription")
# Series of these modalities carry no image volume (segmentations, reports, annotations).
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "RTSTRUCT", "PR", "KO", "REG", "DOC", "RTPLAN"})
PROGRESS_MIN_FILES = 50
_SCAN_TAGS = ["SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
              "Modality", *PATIENT_STUDY_TAGS]


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder. folder: the deepest folder holding all its files."""

    uid: str
    number: int | None
    description: str
    modality: str
    n_files: int
    folder: str

    def summary(self) -> str:
        number = "#?" if self.number is None else f"#{self.number}"
        return (f"{number} '{self.description}' ({self.modality or '?'}, {self.n_files} files, "
                f"UID {self.uid})")


@dataclass(frozen=True)
class DicomSeries:
    """A series read as a volume. datasets: full pydicom Datasets in the volume's k order."""

    volume: Volume
    info: SeriesInfo
    datasets: list


@dataclass(frozen=True)
class _SeriesFiles:
    info: SeriesInfo
    paths: list[Path]
    header: Dataset  # the first file's series/patient/study tags (no pixels)


def find_series(folder) -> list[SeriesInfo]:
    """Every DICOM series under `folder` (searched recursively; non-DICOM files are skipped),
    ordered by series number. BadInput if the folder does not exist."""
    return [found.info for found in _scan(Path(folder))]


def read_dicom_series(folder, series: str | None = None) -> DicomSeries:
    """Read one single-frame DICOM series under `folder` into a Volume.

    series: exact SeriesInstanceUID, SeriesNumber, or SeriesDescription (case-insensitive,
    exact or a unique substring); needed when the folder holds several image series.
    Returns the volume in native voxel order (i = column, j = row, k = slices sorted along the
    slice normal), its affine in RAS+ mm, and the datasets in k order. Voxels are rescaled with
    each slice's RescaleSlope/Intercept: an integer dtype when all slopes are 1 and intercepts
    whole numbers, float32 otherwise.
    """
    folder = Path(folder)
    chosen = _select(_scan(folder), series, folder)
    where = folder if chosen.info.folder == str(folder) else Path(chosen.info.folder)
    datasets = _read_files(chosen.paths, folder)
    for dataset, path in zip(datasets, chosen.paths):
        _check_single_frame(dataset, path)
    planes = [geometry.slice_plane(dataset, path) for dataset, path in zip(datasets, chosen.paths)]
    names = [_slice_name(path, dataset, folder) for dataset, path in zip(datasets, chosen.paths)]
    order = geometry.stack_order(planes, names, where)
    datasets = [datasets[i] for i in order]
    paths = [chosen.paths[i] for i in order]
    affine = geometry.affine_ras([planes[i] for i in order], _single_slice_mm(datasets[0]), where)
    array = pixels.rescaled_voxels(datasets, paths)
    volume = Volume(array=array, affine=affine, header=None, source=str(folder))
    return DicomSeries(volume=volume, info=chosen.info, datasets=datasets)


def write_dicom_series(volume: Volume, out_dir, *, reference=None,
                       series_description: str = "tumorcli",
                       series_number: int = 1001) -> list[Path]:
    """Write a 3D volume as an MR Image Storage series, one file per slice (IM000001.dcm, ...).

    reference: a DICOM folder or a list of Datasets whose patient/study tags are copied (only
    those, see PATIENT_STUDY_TAGS); without it the series starts a new study. Series, SOP and
    frame-of-reference UIDs are always new. Pixels are int16: exact for integer voxels (with a
    whole-number intercept if they do not fit int16), otherwise scaled to the full int16 range
    with RescaleSlope/RescaleIntercept, which is lossy for floats (error at most half a step
    of (max - min) / 65534). A grid whose k axis runs against the slice normal is written
    in reverse slice order, so reading it back gives k reversed. The folder appears only when
    complete. Returns the file paths in slice order.
    """
    out_dir = Path(out_dir)
    source = volume.source or "volume"
    if volume.array.ndim != 3:
        raise BadInput(f"{source}: has {volume.array.ndim} dimensions but a DICOM series needs 3",
                       "pass one 3D volume")
    layout = geometry.series_layout(volume.affine, volume.shape, source)
    stored, slope, intercept = pixels.encode_int16(np.asarray(volume.array), source)
    if layout.reverse_k:
        stored = stored[:, :, ::-1]
    base = _series_dataset(_reference_header(reference), layout, series_description,
                           series_number, slope, intercept, volume.array)
    written = []
    with atomic_folder(out_dir) as temporary:
        for k in range(stored.shape[2]):
            dataset = copy.deepcopy(base)  # file_meta included
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            dataset.InstanceNumber = k + 1
            dataset.ImagePositionPatient = [_ds(v) for v in layout.positions[k]]
            dataset.SliceLocation = _ds(float(layout.positions[k] @ np.cross(
                layout.row_cosine, layout.column_cosine)))
            dataset.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (rows, cols)
            name = f"IM{k + 1:06d}.dcm"
            pydicom.dcmwrite(temporary / name, dataset, enforce_file_format=True)
            written.append(out_dir / name)
    return written


def _scan(folder: Path) -> list[_SeriesFiles]:
    if not folder.exists():
        raise BadInput(f"{folder}: folder not found", "check the path and spelling")
    if not folder.is_dir():
        raise BadInput(f"{folder}: is a file, not a folder",
                       "give the folder that holds the DICOM series")
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    by_uid: dict[str, list[tuple[Path, Dataset]]] = {}
    with _progress("Scanning DICOM", len(files)) as advance:
        for path in files:
            header = _read_header(path)
            if header is not None and header.get("SeriesInstanceUID"):
                by_uid.setdefault(str(header.SeriesInstanceUID), []).append((path, header))
            advance()
    if not by_uid:
        raise BadInput(f"no DICOM files in {folder}",
                       "give the folder that holds the .dcm files (it is searched recursively)")
    found = []
    for uid, members in by_uid.items():
        paths = [path for path, _ in members]
        header = members[0][1]
        number = header.get("SeriesNumber")
        info = SeriesInfo(uid=uid, number=None if number in (None, "") else int(number),
                          description=str(header.get("SeriesDescription", "") or ""),
                          modality=str(header.get("Modality", "") or ""), n_files=len(paths),
                          folder=os.path.commonpath([str(path.parent) for path in paths]))
        found.append(_SeriesFiles(info, paths, header))
    return sorted(found, key=lambda s: (s.info.number is None, s.info.number or 0, s.info.uid))


def _read_header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_SCAN_TAGS)
    except (InvalidDicomError, OSError):
        return None  # not DICOM (or unreadable): skipped, as documented
    except Exception as error:  # pydicom raises many types for damaged headers
        raise BadInput(f"{path}: damaged DICOM header ({first_line(error)})",
                       "remove the file or export the series again") from None


def _select(found: list[_SeriesFiles], wanted: str | None, folder: Path) -> _SeriesFiles:
    listing = "; ".join(s.info.summary() for s in found)
    hint = "pass --series with a series UID, number or description, e.g. --series " + (
        str(found[0].info.number) if found[0].info.number is not None else found[0].info.uid)
    if wanted is None:
        images = [s for s in found if s.info.modality.upper() not in NON_IMAGE_MODALITIES]
        if len(images) == 1:
            return images[0]
        if not images:
            raise BadInput(f"{folder}: holds no image series, only {listing}",
                           "give the folder of the scan itself")
        raise BadInput(f"{folder}: holds {len(found)} DICOM series: {listing}", hint)
    wanted = str(wanted).strip()
    lowered = wanted.lower()
    for matches in (
        [s for s in found if s.info.uid == wanted],
        [s for s in found if wanted.isdigit() and s.info.number == int(wanted)],
        [s for s in found if s.info.description.lower() == lowered],
        [s for s in found if lowered and lowered in s.info.description.lower()],
    ):
        if len(matches) == 1:
            chosen = matches[0]
            if chosen.info.modality.upper() in NON_IMAGE_MODALITIES:
                raise BadInput(f"{folder}: series {chosen.info.summary()} is a "
                               f"{chosen.info.modality}, not an image series", hint)
            return chosen
        if len(matches) > 1:
            raise BadInput(f"{folder}: --series {wanted!r} matches {len(matches)} series: "
                           + "; ".join(s.info.summary() for s in matches),
                           "pass the series UID to choose exactly one")
    raise BadInput(f"{folder}: no series matches --series {wanted!r}; it holds: {listing}", hint)


def _read_files(paths: list[Path], folder: Path) -> list[Dataset]:
    datasets = []
    with _progress("Reading DICOM", len(paths)) as advance:
        for path in paths:
            try:
                datasets.append(pydicom.dcmread(path))
            except Exception as error:  # truncated or damaged after the header
                raise BadInput(f"{path}: damaged DICOM file ({first_line(error)})",
                               f"remove it or export the series in {folder} again") from None
            advance()
    return datasets


def _check_single_frame(dataset: Dataset, path: Path) -> None:
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1 or "PerFrameFunctionalGroupsSequence" in dataset:
        raise BadInput(f"{path}: a multi-frame (enhanced) DICOM image with {frames} frames; "
                       "tumorcli reads single-frame series (one file per slice) only",
                       "convert it with dcm2niix (pip install dcm2niix; dcm2niix -z y -o OUT "
                       "FOLDER) and pass the NIfTI file")


def _slice_name(path: Path, dataset: Dataset, folder: Path) -> str:
    number = dataset.get("InstanceNumber")
    name = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
    return f"{name} (instance {number})" if number not in (None, "") else name


def _single_slice_mm(dataset: Dataset) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = pixels.tag_number(dataset, keyword, None)
        if value:
            return abs(value)
    return None


def _reference_header(reference) -> Dataset | None:
    if reference is None:
        return None
    if isinstance(reference, (str, os.PathLike)):
        found = _scan(Path(reference))
        studies = {str(s.header.get("StudyInstanceUID", "")) for s in found}
        if len(studies) > 1:
            raise BadInput(f"{reference}: holds series from {len(studies)} studies, so the "
                           "patient/study to copy is ambiguous",
                           "give a folder with one study (e.g. the scan's own series folder)")
        return found[0].header
    datasets = list(reference)
    if not datasets or not isinstance(datasets[0], Dataset):
        raise BadInput("reference: expected a DICOM folder or a list of pydicom Datasets",
                       "pass the folder of the scan the volume came from")
    return datasets[0]


def _series_dataset(reference: Dataset | None, layout: geometry.SeriesLayout, description: str,
                    number: int, slope: float, intercept: float, values: np.ndarray) -> Dataset:
    """Everything the slices share; per-slice UIDs, positions and pixels are set by the caller."""
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = MRImageStorage
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    dataset.SOPClassUID = MRImageStorage
    for keyword in PATIENT_STUDY_TAGS:
        setattr(dataset, keyword, reference.get(keyword, "") if reference is not None else "")
    if not dataset.StudyInstanceUID:
        dataset.StudyInstanceUID = generate_uid()
        dataset.StudyDate, dataset.StudyTime = date, time
    dataset.Modality = "MR"
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SeriesNumber = number
    dataset.SeriesDescription = description
    dataset.SeriesDate = dataset.ContentDate = dataset.InstanceCreationDate = date
    dataset.SeriesTime = dataset.ContentTime = dataset.InstanceCreationTime = time
    dataset.FrameOfReferenceUID = generate_uid()
    dataset.PositionReferenceIndicator = ""
    dataset.Manufacturer = "tumorcli"
    dataset.ImageType = ["DERIVED", "SECONDARY"]
    # MR Image module, type 1 and 2: this is a derived image, so acquisition values are empty.
    dataset.ScanningSequence, dataset.SequenceVariant, dataset.ScanOptions = "RM", "NONE", ""
    dataset.MRAcquisitionType = "3D"
    dataset.EchoTime = dataset.RepetitionTime = dataset.EchoTrainLength = ""
    dataset.ImageOrientationPatient = [_ds(v) for v in (*layout.row_cosine, *layout.column_cosine)]
    dataset.PixelSpacing = [_ds(v) for v in layout.pixel_spacing]
    dataset.SliceThickness = dataset.SpacingBetweenSlices = _ds(layout.slice_spacing)
    dataset.Rows, dataset.Columns = values.shape[1], values.shape[0]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 1  # signed
    dataset.RescaleSlope, dataset.RescaleIntercept = _ds(slope), _ds(intercept)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    dataset.WindowCenter, dataset.WindowWidth = _ds((low + high) / 2), _ds(max(high - low, 1.0))
    return dataset


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (the DICOM DS limit)."""
    return format_number_as_ds(float(value))


def _progress(label: str, total: int):
    """A progress bar (drawn on a terminal only) for long scans; nothing for a few files."""
    if total >= PROGRESS_MIN_FILES:
        return task(label, total=total)
    return contextlib.nullcontext(lambda: None)
