"""DICOM SEG out and back, on the grid of a synthetic oblique series."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dataclasses import replace
from pathlib import Path

from dicom_factory import known_stored_volume, make_slices, oblique_affine, save
from tumorcli import __version__
from tumorcli.errors import BadInput
from tumorcli.io.dicom import read_dicom_series
from tumorcli.io.dicom_seg import read_dicom_seg, write_dicom_seg
from tumorcli.io.volume import Volume


@pytest.fixture
def scan(tmp_path):
    """An oblique 24x20x8 series in tmp_path/scan and its volume as read by tumorcli."""
    save(make_slices(known_stored_volume(), oblique_affine()), tmp_path / "scan")
    return tmp_path / "scan", read_dicom_series(tmp_path / "scan").volume


def _tumour(grid: Volume) -> Volume:
    """Labels 1 (necrosis) inside 3 (enhancing) inside 2 (oedema), off-centre."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    radius = np.sqrt(((i - 10) / 8) ** 2 + ((j - 9) / 7) ** 2 + ((k - 4) / 3) ** 2)
    labels = np.select([radius < 0.35, radius < 0.6, radius < 1.0], [1, 3, 2], 0)
    return grid.with_array(labels.astype(np.uint8))


def test_labels_1_2_3_survive_a_round_trip_exactly(scan, tmp_path):
    folder, grid = scan
    mask = _tumour(grid)
    assert set(np.unique(mask.array)) == {0, 1, 2, 3}
    out = write_dicom_seg(mask, folder, tmp_path / "tumour.seg.dcm")
    back = read_dicom_seg(out, folder)
    np.testing.assert_array_equal(back.array, mask.array)
    np.testing.assert_allclose(back.affine, grid.affine, atol=0)


def test_seg_names_the_brats_regions_and_tumorcli_as_the_algorithm(scan, tmp_path):
    folder, grid = scan
    out = write_dicom_seg(_tumour(grid), folder, tmp_path / "tumour.dcm")
    seg = pydicom.dcmread(out)
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.SegmentationType == "BINARY"
    labels = [item.SegmentLabel for item in seg.SegmentSequence]
    assert labels == ["NETC", "SNFH", "ET"]
    types = [item.SegmentedPropertyTypeCodeSequence[0].CodeMeaning for item in seg.SegmentSequence]
    assert types == ["Necrosis", "Edema", "Neoplasm"]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("tumorcli", __version__)
    scan_file = pydicom.dcmread(next(folder.iterdir()))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == scan_file.SeriesInstanceUID
    assert seg.PatientID == scan_file.PatientID


def test_mask_in_another_axis_order_is_matched_to_the_scan(scan, tmp_path):
    folder, grid = scan
    mask = _tumour(grid)
    flipped = mask.reoriented("PIL")  # axes permuted and flipped
    assert flipped.orientation != grid.orientation
    back = read_dicom_seg(write_dicom_seg(flipped, folder, tmp_path / "seg.dcm"), folder)
    np.testing.assert_array_equal(back.array, mask.array)


def test_only_present_labels_become_segments_and_keep_their_values(scan, tmp_path):
    folder, grid = scan
    labels = np.zeros(grid.shape, dtype=np.int16)
    labels[2:6, 3:7, 2:5], labels[12:18, 10:15, 4:7] = 4, 1  # BraTS 2021 numbering: ET = 4
    out = write_dicom_seg(grid.with_array(labels), folder, tmp_path / "seg.dcm",
                          labels={1: "NCR", 4: "ET"})
    seg = pydicom.dcmread(out)
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["NCR", "ET"]
    np.testing.assert_array_equal(read_dicom_seg(out, folder).array, labels)


def test_mask_on_a_shifted_grid_is_refused_and_nothing_is_left_behind(scan, tmp_path):
    folder, grid = scan
    shifted_affine = grid.affine.copy()
    shifted_affine[:3, 3] += 0.5
    shifted = replace(_tumour(grid), affine=shifted_affine, source="mask.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BadInput, match="mask.nii.gz: the mask is not on the grid") as caught:
        write_dicom_seg(shifted, folder, out / "seg.dcm")
    assert "resample" in caught.value.hint
    assert list(out.iterdir()) == []


def test_mask_of_another_shape_is_refused(scan, tmp_path):
    folder, grid = scan
    smaller = Volume(np.ones((24, 20, 7), dtype=np.uint8), grid.affine)
    with pytest.raises(BadInput, match="not on the grid.*shape"):
        write_dicom_seg(smaller, folder, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_empty_mask_is_refused(scan, tmp_path):
    folder, grid = scan
    with pytest.raises(BadInput, match="empty"):
        write_dicom_seg(grid.with_array(np.zeros(grid.shape, np.uint8)), folder,
                        tmp_path / "s.dcm")
    assert list(tmp_path.glob("*.dcm")) == []


def test_probability_map_is_refused(scan, tmp_path):
    folder, grid = scan
    with pytest.raises(BadInput, match="non-integer"):
        write_dicom_seg(grid.with_array(np.full(grid.shape, 0.3)), folder, tmp_path / "s.dcm")


def test_seg_read_against_another_series_is_refused(scan, tmp_path):
    folder, grid = scan
    out = write_dicom_seg(_tumour(grid), folder, tmp_path / "seg.dcm")
    save(make_slices(known_stored_volume(), oblique_affine()), tmp_path / "other")
    with pytest.raises(BadInput, match="seg.dcm: segments series"):
        read_dicom_seg(out, tmp_path / "other")


def test_non_seg_file_is_refused(scan):
    folder, _ = scan
    image = next(folder.iterdir())
    with pytest.raises(BadInput, match="MR Image Storage, not a DICOM Segmentation"):
        read_dicom_seg(image, folder)


def test_seg_saved_inside_the_scan_folder_does_not_hide_the_scan(scan):
    folder, grid = scan
    mask = _tumour(grid)
    out = write_dicom_seg(mask, folder, folder / "seg.dcm")
    np.testing.assert_array_equal(read_dicom_seg(out, folder).array, mask.array)


def test_anonymised_scan_without_type_2_patient_tags_still_gets_a_seg(tmp_path):
    datasets = make_slices(known_stored_volume(), oblique_affine())
    for dataset in datasets:
        for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                        "ReferringPhysicianName", "StudyTime"):
            delattr(dataset, keyword)
    save(datasets, tmp_path / "anonymised")
    grid = read_dicom_series(tmp_path / "anonymised").volume
    out = write_dicom_seg(_tumour(grid), tmp_path / "anonymised", tmp_path / "seg.dcm")
    assert pydicom.dcmread(out).PatientBirthDate == ""
    np.testing.assert_array_equal(read_dicom_seg(out, tmp_path / "anonymised").array,
                                  _tumour(grid).array)


def test_failure_while_writing_leaves_no_file_behind(scan, tmp_path, monkeypatch):
    folder, grid = scan

    def crash_half_way(path, dataset, **options):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pydicom, "dcmwrite", crash_half_way)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="disk full"):
        write_dicom_seg(_tumour(grid), folder, out / "seg.dcm")
    assert list(out.iterdir()) == []
