"""DICOM series in and out, checked against series written by pydicom alone and by dcm2niix."""

from __future__ import annotations

import contextlib
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from dicom_factory import (known_stored_volume, make_multiframe, make_slices, oblique_affine,
                           rotation, save)
import tumorcli.io.dicom
from tumorcli.errors import BadInput
from tumorcli.io.dicom import (PATIENT_STUDY_TAGS, find_series, read_dicom_series,
                               write_dicom_series)
from tumorcli.io.volume import Volume, load_volume

SLOPE, INTERCEPT = 0.5, -100.0


@pytest.fixture
def oblique_series(tmp_path):
    """An oblique 0.9x0.9x3 mm series, slope 0.5, intercept -100: (folder, voxels, affine)."""
    stored = known_stored_volume()
    affine = oblique_affine()
    save(make_slices(stored, affine, slope=SLOPE, intercept=INTERCEPT), tmp_path / "t1")
    return tmp_path / "t1", stored * SLOPE + INTERCEPT, affine


def test_oblique_anisotropic_rescaled_series_reads_as_the_known_volume(oblique_series):
    folder, voxels, affine = oblique_series
    series = read_dicom_series(folder)
    assert series.volume.shape == (24, 20, 8)
    assert series.volume.array.dtype == np.float32
    np.testing.assert_array_equal(series.volume.array, voxels.astype(np.float32))
    np.testing.assert_allclose(series.volume.affine, affine, atol=1e-4)
    np.testing.assert_allclose(series.volume.spacing, (0.9, 0.9, 3.0), atol=1e-5)
    assert series.volume.header is None and series.volume.source == str(folder)
    assert [int(d.InstanceNumber) for d in series.datasets] == list(range(1, 9))
    assert series.info.n_files == 8 and series.info.description == "T1 synthetic"


def test_integer_series_keeps_an_integer_dtype(tmp_path):
    stored = known_stored_volume()
    save(make_slices(stored, oblique_affine(), intercept=-1024), tmp_path)
    volume = read_dicom_series(tmp_path).volume
    assert np.issubdtype(volume.array.dtype, np.integer)
    np.testing.assert_array_equal(volume.array, stored.astype(np.int64) - 1024)


def test_slope_that_differs_per_slice_is_applied_per_slice(tmp_path):
    stored = known_stored_volume()
    slopes = np.linspace(0.5, 2.25, stored.shape[2])  # 0.25 steps: exact as DS text
    save(make_slices(stored, oblique_affine(), slope=slopes, intercept=3), tmp_path)
    volume = read_dicom_series(tmp_path).volume
    np.testing.assert_allclose(volume.array, stored * slopes + 3, rtol=1e-6)


def test_single_slice_series_takes_its_thickness_from_slice_thickness(tmp_path):
    stored = known_stored_volume(shape=(24, 20, 1))
    save(make_slices(stored, oblique_affine()), tmp_path)
    volume = read_dicom_series(tmp_path).volume
    np.testing.assert_allclose(volume.affine, oblique_affine(), atol=1e-4)


def test_dcm2niix_gives_the_same_voxels_and_affine(oblique_series, tmp_path, capsys):
    dcm2niix = pytest.importorskip("dcm2niix", reason="the dcm2niix PyPI package is not installed")
    folder, _, _ = oblique_series
    out = tmp_path / "nifti"
    out.mkdir()
    result = subprocess.run([dcm2niix.bin, "-z", "y", "-f", "out", "-o", str(out), str(folder)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    theirs = load_volume(out / "out.nii.gz").reoriented("RAS")
    ours = read_dicom_series(folder).volume.reoriented("RAS")
    voxel_difference = float(np.abs(theirs.array.astype(np.float64) - ours.array).max())
    affine_difference = float(np.abs(theirs.affine - ours.affine).max())
    with capsys.disabled():
        print(f"\ndcm2niix vs tumorcli: max voxel difference {voxel_difference:.3g}, "
              f"max affine difference {affine_difference:.3g} mm")
    assert theirs.shape == ours.shape
    assert voxel_difference <= 1e-4
    assert affine_difference <= 1e-4


def test_dcm2niix_reads_our_written_series_as_the_volume_we_wrote(tmp_path):
    dcm2niix = pytest.importorskip("dcm2niix", reason="the dcm2niix PyPI package is not installed")
    volume = Volume(known_stored_volume(), oblique_affine(degrees=(-20, 0, 10)))
    write_dicom_series(volume, tmp_path / "dicom")
    result = subprocess.run([dcm2niix.bin, "-z", "y", "-f", "out", "-o", str(tmp_path),
                             str(tmp_path / "dicom")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    theirs = load_volume(tmp_path / "out.nii.gz").reoriented("RAS")
    np.testing.assert_array_equal(theirs.array, volume.reoriented("RAS").array)
    np.testing.assert_allclose(theirs.affine, volume.reoriented("RAS").affine, atol=1e-4)


def test_written_series_reads_back_as_the_same_oblique_grid_and_integer_voxels(tmp_path):
    stored = known_stored_volume().astype(np.int32) - 500
    volume = Volume(stored, oblique_affine(degrees=(-20, 0, 10)))
    paths = write_dicom_series(volume, tmp_path / "out")
    assert [p.name for p in paths[:2]] == ["IM000001.dcm", "IM000002.dcm"]
    back = read_dicom_series(tmp_path / "out")
    np.testing.assert_array_equal(back.volume.array, stored)
    np.testing.assert_allclose(back.volume.affine, volume.affine, atol=1e-4)
    first = pydicom.dcmread(paths[0])
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.MRImageStorage and first.BitsAllocated == 16


def test_written_float_series_reads_back_within_one_rescale_step(tmp_path):
    floats = np.random.default_rng(1).normal(0.0, 1.0, size=(24, 20, 8)).astype(np.float32)
    write_dicom_series(Volume(floats, oblique_affine()), tmp_path / "out")
    back = read_dicom_series(tmp_path / "out").volume
    step = (floats.max() - floats.min()) / 65534
    assert np.abs(back.array - floats).max() <= step
    np.testing.assert_allclose(back.affine, oblique_affine(), atol=1e-4)


def test_integers_beyond_int16_are_stored_exactly_with_an_intercept(tmp_path):
    values = (known_stored_volume().astype(np.int32) + 40000)
    write_dicom_series(Volume(values, oblique_affine()), tmp_path / "out")
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "out").volume.array, values)


def test_left_handed_grid_is_written_in_reverse_slice_order(tmp_path):
    las = np.diag([-1.0, 1.0, 2.0, 1.0])
    values = known_stored_volume()
    write_dicom_series(Volume(values, las), tmp_path / "out")
    back = read_dicom_series(tmp_path / "out").volume
    assert back.orientation == "LAI"  # k now runs along the slice normal (inferior)
    np.testing.assert_array_equal(back.reoriented("LAS").array, values)
    np.testing.assert_allclose(back.reoriented("LAS").affine, las, atol=1e-6)


def test_reference_copies_patient_and_study_tags_and_nothing_else(oblique_series, tmp_path):
    folder, _, _ = oblique_series
    paths = write_dicom_series(Volume(known_stored_volume(), np.eye(4)), tmp_path / "out",
                               reference=folder, series_description="brain mask")
    written, reference = pydicom.dcmread(paths[0]), pydicom.dcmread(next(folder.iterdir()))
    for keyword in PATIENT_STUDY_TAGS:
        assert written.get(keyword) == reference.get(keyword), keyword
    assert written.SeriesDescription == "brain mask"
    assert written.SeriesInstanceUID != reference.SeriesInstanceUID
    assert written.FrameOfReferenceUID != reference.FrameOfReferenceUID
    assert written.Modality == "MR"


def test_new_study_carries_empty_type_2_patient_and_study_tags(tmp_path):
    paths = write_dicom_series(Volume(known_stored_volume(), np.eye(4)), tmp_path / "out")
    written = pydicom.dcmread(paths[0])
    for keyword in PATIENT_STUDY_TAGS:
        assert keyword in written, keyword
    assert written.StudyInstanceUID


def test_sheared_grid_is_refused_and_nothing_is_written(tmp_path):
    sheared = np.eye(4)
    sheared[0, 1] = 0.2
    with pytest.raises(BadInput, match="sheared"):
        write_dicom_series(Volume(known_stored_volume(), sheared), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_a_series_leaves_no_folder_behind(tmp_path, monkeypatch):
    real_dcmwrite, calls = pydicom.dcmwrite, []

    def crash_on_third_slice(path, dataset, **options):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_dcmwrite(path, dataset, **options)

    monkeypatch.setattr(pydicom, "dcmwrite", crash_on_third_slice)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(Volume(known_stored_volume(), np.eye(4)), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# Bad inputs: each names the folder and says what is wrong.

def _two_series(tmp_path):
    stored = known_stored_volume()
    save(make_slices(stored, oblique_affine(), series_number=3, description="T1 MPRAGE"),
         tmp_path / "a")
    save(make_slices(stored, oblique_affine(), series_number=7, description="FLAIR axial"),
         tmp_path / "b")
    return tmp_path


def test_two_series_without_a_choice_lists_both(tmp_path):
    folder = _two_series(tmp_path)
    with pytest.raises(BadInput) as caught:
        read_dicom_series(folder)
    assert str(folder) in caught.value.message
    assert "T1 MPRAGE" in caught.value.message and "FLAIR axial" in caught.value.message
    assert "--series" in caught.value.hint


@pytest.mark.parametrize("choice", ["7", "flair axial", "FLAIR", "uid"])
def test_series_is_chosen_by_number_description_or_uid(tmp_path, choice):
    folder = _two_series(tmp_path)
    flair = next(info for info in find_series(folder) if info.number == 7)
    series = read_dicom_series(folder, flair.uid if choice == "uid" else choice)
    assert series.info == flair
    assert series.info.folder == str(folder / "b")


def test_series_choice_that_matches_nothing_lists_the_series(tmp_path):
    folder = _two_series(tmp_path)
    with pytest.raises(BadInput, match="no series matches .*T1 MPRAGE.*FLAIR axial"):
        read_dicom_series(folder, "DWI")


def test_ambiguous_series_choice_is_refused(tmp_path):
    folder = _two_series(tmp_path)
    with pytest.raises(BadInput, match="matches 2 series"):
        read_dicom_series(folder, "a")  # in "MPRAGE" and "axial"


def test_missing_slice_is_reported_with_its_neighbours(tmp_path):
    datasets = make_slices(known_stored_volume(), oblique_affine())
    save(datasets[:3] + datasets[5:], tmp_path)
    with pytest.raises(BadInput) as caught:
        read_dicom_series(tmp_path)
    message = caught.value.message
    assert str(tmp_path) in message
    assert "2 slice(s) missing" in message
    assert "(instance 3)" in message and "(instance 6)" in message


def test_uneven_slice_spacing_is_reported(tmp_path):
    datasets = make_slices(known_stored_volume(), oblique_affine(degrees=(0, 0, 0)))
    x, y, z = (float(v) for v in datasets[4].ImagePositionPatient)
    datasets[4].ImagePositionPatient = [x, y, z + 1.4]  # 1.4 mm along the normal, out of place
    save(datasets, tmp_path)
    with pytest.raises(BadInput, match=f"{tmp_path}: uneven slice spacing"):
        read_dicom_series(tmp_path)


def test_mixed_orientations_are_reported(tmp_path):
    datasets = make_slices(known_stored_volume(), oblique_affine())
    datasets[2].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal slice
    save(datasets, tmp_path)
    with pytest.raises(BadInput, match=f"{tmp_path}: slices have mixed orientations"):
        read_dicom_series(tmp_path)


def test_duplicate_positions_from_a_second_echo_are_reported(tmp_path):
    stored = known_stored_volume()
    echoes = make_slices(stored, oblique_affine()) + make_slices(stored, oblique_affine())
    uid = echoes[0].SeriesInstanceUID
    for dataset in echoes:
        dataset.SeriesInstanceUID = uid
    save(echoes, tmp_path)
    with pytest.raises(BadInput, match="16 slices share a position.*multi-echo"):
        read_dicom_series(tmp_path)


def test_mixed_matrix_sizes_are_reported(tmp_path):
    datasets = make_slices(known_stored_volume(), oblique_affine())
    datasets[1].PixelSpacing = [1.2, 1.2]
    save(datasets, tmp_path)
    with pytest.raises(BadInput, match="differ in matrix size or pixel spacing"):
        read_dicom_series(tmp_path)


def test_missing_geometry_tag_names_the_file(tmp_path):
    datasets = make_slices(known_stored_volume(), oblique_affine())
    del datasets[0].ImageOrientationPatient
    paths = save(datasets, tmp_path)
    with pytest.raises(BadInput, match=f"{paths[0]}: missing the geometry tag.*Orientation"):
        read_dicom_series(tmp_path)


def test_multi_frame_file_is_refused_with_dcm2niix_as_the_way_out(tmp_path):
    path = tmp_path / "enhanced.dcm"
    pydicom.dcmwrite(path, make_multiframe(known_stored_volume()), enforce_file_format=True)
    with pytest.raises(BadInput, match="multi-frame") as caught:
        read_dicom_series(tmp_path)
    assert str(path) in caught.value.message and "dcm2niix" in caught.value.hint


def test_compressed_pixels_without_a_decoder_say_what_to_install(tmp_path):
    datasets = make_slices(known_stored_volume(shape=(24, 20, 2)), oblique_affine())
    for dataset in datasets:
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.HTJ2KLossless
        dataset.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(12)])
    save(datasets, tmp_path)
    with pytest.raises(BadInput, match="JPEG 2000") as caught:
        read_dicom_series(tmp_path)
    assert "pip install" in caught.value.hint


@pytest.mark.parametrize("content", [None, b"not dicom at all", b"\x00" * 300])
def test_folder_without_dicom_is_reported(tmp_path, content):
    if content is not None:
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "notes.dcm").write_bytes(content)
    with pytest.raises(BadInput, match=f"no DICOM files in {tmp_path}"):
        read_dicom_series(tmp_path)


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(BadInput, match="folder not found"):
        find_series(tmp_path / "nowhere")


def test_non_dicom_files_beside_a_series_are_skipped(oblique_series):
    folder, voxels, _ = oblique_series
    (folder / "README.txt").write_text("exported by PACS")
    directory = Dataset()
    directory.file_meta = FileMetaDataset()
    directory.file_meta.MediaStorageSOPClassUID = pydicom.uid.MediaStorageDirectoryStorage
    directory.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    directory.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    directory.FileSetID = "EXPORT"
    pydicom.dcmwrite(folder / "DICOMDIR", directory, enforce_file_format=True)
    assert len(find_series(folder)) == 1
    np.testing.assert_array_equal(read_dicom_series(folder).volume.array, voxels)


def test_rotation_helper_is_a_proper_rotation():
    matrix = rotation(15, 0, 12)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(matrix) == pytest.approx(1.0)


def test_long_series_reports_progress_through_tumorcli_progress(tmp_path, monkeypatch):
    advances = []

    @contextlib.contextmanager
    def task(label, total):
        yield lambda: advances.append(label)

    monkeypatch.setattr(tumorcli.io.dicom, "task", task)
    save(make_slices(known_stored_volume(shape=(4, 4, 60)), oblique_affine()), tmp_path)
    read_dicom_series(tmp_path)
    assert advances.count("Reading DICOM") == 60
