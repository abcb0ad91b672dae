"""`tumor convert` end to end: DICOM → NIfTI → DICOM series, and a mask → DICOM SEG."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
from typer.testing import CliRunner

from dicom_factory import known_stored_volume, make_slices, oblique_affine, save
from tumorcli.cli.app import app
from tumorcli.io.dicom import read_dicom_series
from tumorcli.io.dicom_seg import read_dicom_seg

runner = CliRunner()


def convert(*args: str) -> dict:
    result = runner.invoke(app, ["convert", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_dicom_to_nifti_to_dicom_keeps_voxels_geometry_and_patient(tmp_path):
    stored, affine = known_stored_volume(), oblique_affine()
    save(make_slices(stored, affine, slope=0.5, intercept=-100.0), tmp_path / "scan")

    report = convert("-i", str(tmp_path / "scan"), "-o", str(tmp_path / "scan.nii.gz"))
    assert report["shape"] == list(stored.shape)
    assert np.allclose(report["spacing_mm"], [0.9, 0.9, 3.0], atol=1e-4)
    image = nib.load(tmp_path / "scan.nii.gz")
    assert np.array_equal(np.asanyarray(image.dataobj), stored * 0.5 - 100.0)
    assert np.allclose(image.affine, affine, atol=1e-4)

    convert("-i", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "again"), "--to", "dicom",
            "--reference", str(tmp_path / "scan"), "--description", "round trip")
    again = read_dicom_series(tmp_path / "again")
    expected = stored * 0.5 - 100.0
    half_step = (expected.max() - expected.min()) / 65534 / 2  # float voxels go to int16 + slope
    assert np.abs(again.volume.array - expected).max() <= half_step * 1.001
    assert np.allclose(again.volume.affine, affine, atol=1e-4)
    written = pydicom.dcmread(next((tmp_path / "again").iterdir()))
    assert written.PatientID == "SYN001" and written.SeriesDescription == "round trip"


def test_a_mask_drawn_on_the_converted_scan_becomes_a_seg_that_reads_back_exactly(tmp_path):
    stored, affine = known_stored_volume(), oblique_affine()
    save(make_slices(stored, affine), tmp_path / "scan")
    convert("-i", str(tmp_path / "scan"), "-o", str(tmp_path / "scan.nii.gz"), "--orient", "RAS")
    scan = nib.load(tmp_path / "scan.nii.gz")  # reoriented: the SEG writer must undo it
    labels = np.zeros(scan.shape, np.uint8)
    labels[5:12, 4:10, 2:6] = 2
    labels[7:10, 5:8, 3:5] = 1
    labels[10:12, 8:10, 3:5] = 3
    nib.save(nib.Nifti1Image(labels, scan.affine), tmp_path / "seg.nii.gz")

    report = convert("-i", str(tmp_path / "seg.nii.gz"), "-o", str(tmp_path / "seg.dcm"),
                     "--to", "seg", "--reference", str(tmp_path / "scan"))
    assert report["labels"] == [1, 2, 3]
    back = read_dicom_seg(tmp_path / "seg.dcm", tmp_path / "scan").reoriented("RAS")
    assert np.array_equal(back.array, labels)
    assert np.allclose(back.affine, scan.affine, atol=1e-4)
