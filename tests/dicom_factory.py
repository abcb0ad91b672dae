"""Synthetic DICOM series written with pydicom alone (not with tumorcli) from a known volume.

`stored` is (X, Y, Z): voxel [i, j, k] is column i, row j of slice k, so slice k's pixel
matrix is stored[:, :, k].T. `affine_ras` maps (i, j, k) to RAS+ mm; the factory turns it
into LPS ImagePositionPatient/ImageOrientationPatient/PixelSpacing the way a scanner would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage,
                         generate_uid)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(degrees_about_x: float, degrees_about_y: float, degrees_about_z: float) -> np.ndarray:
    """(3, 3) rotation: about x, then y, then z."""
    ax, ay, az = np.radians([degrees_about_x, degrees_about_y, degrees_about_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine(spacing=(0.9, 0.9, 3.0), degrees=(15.0, 0.0, 12.0),
                   origin=(-10.5, 12.25, -30.0)) -> np.ndarray:
    """(4, 4) RAS affine of an anisotropic grid tilted about two axes."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(*degrees) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def known_stored_volume(shape=(24, 20, 8), seed=0) -> np.ndarray:
    """(X, Y, Z) int16 stored values with structure along every axis (so flips show)."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    noise = np.random.default_rng(seed).integers(0, 50, size=shape)
    return (10 * i + 300 * j + 1000 * k + noise).astype(np.int16)


def make_slices(stored: np.ndarray, affine_ras: np.ndarray, *, slope=1.0, intercept=0.0,
                series_uid: str | None = None, study_uid: str | None = None,
                series_number: int = 1, description: str = "T1 synthetic",
                modality: str = "MR") -> list[Dataset]:
    """One single-frame MR dataset per slice k; slope/intercept: scalar or one per slice."""
    count = stored.shape[2]
    slopes = np.broadcast_to(np.asarray(slope, dtype=float), (count,))
    intercepts = np.broadcast_to(np.asarray(intercept, dtype=float), (count,))
    affine_lps = RAS_TO_LPS @ affine_ras
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    row_cosine, column_cosine = affine_lps[:3, 0] / spacing[0], affine_lps[:3, 1] / spacing[1]
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    datasets = []
    for k in range(count):
        dataset = Dataset()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.MediaStorageSOPClassUID = MRImageStorage
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.SOPClassUID = MRImageStorage
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.PatientName, dataset.PatientID = "Synthetic^Patient", "SYN001"
        dataset.PatientBirthDate, dataset.PatientSex = "19700101", "F"
        dataset.StudyInstanceUID = study_uid
        dataset.StudyDate, dataset.StudyTime = "20260101", "120000"
        dataset.AccessionNumber, dataset.ReferringPhysicianName = "ACC1", "Doctor^Who"
        dataset.StudyID, dataset.StudyDescription = "STUDY1", "Brain MRI"
        dataset.Modality = modality
        dataset.SeriesInstanceUID, dataset.SeriesNumber = series_uid, series_number
        dataset.SeriesDescription = description
        dataset.FrameOfReferenceUID = frame_uid
        dataset.InstanceNumber = k + 1
        dataset.ImagePositionPatient = [f"{v:.6f}" for v in (affine_lps @ [0, 0, k, 1])[:3]]
        dataset.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_cosine, *column_cosine)]
        dataset.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # rows, columns
        dataset.SliceThickness = f"{spacing[2]:.6f}"
        dataset.Rows, dataset.Columns = stored.shape[1], stored.shape[0]
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
        dataset.PixelRepresentation = 1
        dataset.RescaleSlope, dataset.RescaleIntercept = f"{slopes[k]:g}", f"{intercepts[k]:g}"
        dataset.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype(np.int16)).tobytes()
        datasets.append(dataset)
    return datasets


def make_multiframe(stored: np.ndarray) -> Dataset:
    """An Enhanced-MR-like file holding every slice as a frame (geometry left out)."""
    dataset = make_slices(stored[:, :, :1], np.eye(4))[0]
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(dataset, keyword)
    dataset.NumberOfFrames = stored.shape[2]
    dataset.PixelData = np.ascontiguousarray(stored.transpose(2, 1, 0).astype(np.int16)).tobytes()
    return dataset


def save(datasets: list[Dataset], folder: Path) -> list[Path]:
    """Write each dataset as a file whose name does not follow slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(len(datasets)).permutation(len(datasets))
    paths = []
    for dataset, position in zip(datasets, order):
        path = folder / f"file{position:04d}_{dataset.SOPInstanceUID[-6:]}.dcm"
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
        paths.append(path)
    return paths
