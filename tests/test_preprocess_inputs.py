"""Finding a subject's four scans: named files/folders, or one PACS export told apart by
SeriesDescription."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tumorcli.io.dicom import read_dicom_series, write_dicom_series
from tumorcli.preprocess.inputs import MODALITIES, find_cohort, read_scan

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "native-dicom"
SUBJECT = "BraTS-GLI-00001-000"


def _pacs_export(tmp_path: Path) -> Path:
    """The sample subject's four series under anonymous folder names, as a PACS exports them."""
    export = tmp_path / "export" / "PATIENT1"
    for number, modality in enumerate(MODALITIES, start=1):
        shutil.copytree(SAMPLE / SUBJECT / f"{SUBJECT}-{modality}", export / "STUDY" / f"SE{number:04d}")
    return export


def test_a_pacs_export_is_one_subject_whose_series_are_found_by_description(tmp_path):
    export = _pacs_export(tmp_path)
    [subject] = find_cohort(export)
    assert subject.name == "PATIENT1" and sorted(subject.images) == sorted(MODALITIES)
    for modality in MODALITIES:
        scan = read_scan(subject.images[modality], modality)
        truth = read_dicom_series(SAMPLE / SUBJECT / f"{SUBJECT}-{modality}").volume
        assert np.array_equal(scan.array, truth.array)
        assert np.allclose(scan.affine, truth.affine)


def test_a_folder_of_pacs_exports_is_a_cohort_not_one_subject(tmp_path):
    _pacs_export(tmp_path)
    (tmp_path / "export" / "PATIENT2").mkdir()
    for number, modality in enumerate(MODALITIES, start=1):  # a second patient: new UIDs
        series = read_dicom_series(SAMPLE / SUBJECT / f"{SUBJECT}-{modality}")
        write_dicom_series(series.volume, tmp_path / "export" / "PATIENT2" / f"S{number}",
                           series_description=series.info.description)
    subjects = find_cohort(tmp_path / "export")
    assert [s.name for s in subjects] == ["PATIENT1", "PATIENT2"]


def test_a_cohort_of_named_subject_folders_is_not_read_as_one_export():
    subjects = find_cohort(SAMPLE)
    assert [s.name for s in subjects] == [SUBJECT]
    assert subjects[0].images["t1c"].name == f"{SUBJECT}-t1c"
