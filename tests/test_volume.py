"""NIfTI volumes: bit-exact round trips, exact reorientation, atomic writes, geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tumorcli.errors import BadInput
from tumorcli.io.volume import Volume, load_volume, save_volume


def _rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    ax, az = np.radians(degrees_x), np.radians(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def _affine(axes: str) -> np.ndarray:
    """Affines whose voxel axes run along the given anatomical directions (or oblique)."""
    affine = np.eye(4)
    spacing = np.diag([0.9, 1.1, 3.0])
    if axes == "oblique":
        affine[:3, :3] = _rotation(12.0, -17.0) @ spacing
    else:
        sign = {"R": 1, "L": -1, "A": 1, "P": -1, "S": 1, "I": -1}
        affine[:3, :3] = np.diag([sign[code] for code in axes]) @ spacing
    affine[:3, 3] = [-91.5, 12.25, -40.0]
    return affine


ORIENTATIONS = ["RAS", "LAS", "LPI", "oblique"]
DTYPES = [np.uint8, np.int16, np.float32]


def _values(dtype, shape=(11, 9, 7)) -> np.ndarray:
    rng = np.random.default_rng(7)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


@pytest.mark.parametrize("axes", ORIENTATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nifti_round_trip_is_bit_exact(tmp_path, dtype, axes):
    values, affine = _values(dtype), _affine(axes)
    original = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(values, affine), original)

    copy = tmp_path / "out.nii.gz"
    save_volume(load_volume(original), copy)

    before, after = nib.load(original), nib.load(copy)
    assert after.get_data_dtype() == np.dtype(dtype)
    assert np.asanyarray(after.dataobj).tobytes() == values.tobytes()
    assert np.array_equal(after.affine, before.affine)
    assert after.header["qform_code"] == before.header["qform_code"] or before.header["qform_code"] == 0
    assert after.header["sform_code"] == before.header["sform_code"]


def test_saving_keeps_the_source_qform_and_sform_codes(tmp_path):
    image = nib.Nifti1Image(_values(np.int16), _affine("LPI"))
    image.set_qform(_affine("LPI"), code=1)
    image.set_sform(_affine("LPI"), code=4)
    image.header["descrip"] = b"scanner export"
    nib.save(image, tmp_path / "in.nii")
    save_volume(load_volume(tmp_path / "in.nii"), tmp_path / "out.nii.gz")
    header = nib.load(tmp_path / "out.nii.gz").header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 4)
    assert header["descrip"].tobytes().rstrip(b"\0") == b"scanner export"


@pytest.mark.parametrize("axes", ORIENTATIONS)
def test_reorienting_to_ras_and_back_is_exact(axes):
    volume = Volume(array=_values(np.float32), affine=_affine(axes))
    ras = volume.reoriented("RAS")
    assert ras.orientation == "RAS"
    # The same world point is at the same value: voxel centre of ras index 0 maps to the same mm.
    back = ras.reoriented(volume.orientation)
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.affine, volume.affine, atol=1e-9)


def test_reorienting_keeps_every_voxel_at_its_world_position():
    volume = Volume(array=_values(np.float32), affine=_affine("LPI"))
    ras = volume.reoriented("RAS")
    index = np.array([3, 2, 5, 1.0])
    world = volume.affine @ index
    ras_index = np.rint(np.linalg.solve(ras.affine, world)[:3]).astype(int)
    assert ras.array[tuple(ras_index)] == volume.array[3, 2, 5]


def test_spacing_and_voxel_volume_of_an_oblique_anisotropic_grid():
    volume = Volume(array=np.zeros((2, 2, 2)), affine=_affine("oblique"))
    assert np.allclose(volume.spacing, (0.9, 1.1, 3.0))
    assert volume.voxel_volume_mm3 == pytest.approx(0.9 * 1.1 * 3.0)


def test_float64_and_label_arrays_get_sensible_dtypes(tmp_path):
    grid = Volume(array=np.zeros((4, 4, 4)), affine=np.eye(4))
    save_volume(grid.with_array(np.full((4, 4, 4), 0.5)), tmp_path / "p.nii.gz")
    save_volume(grid.with_array(np.arange(64).reshape(4, 4, 4) % 4), tmp_path / "seg.nii.gz")
    assert nib.load(tmp_path / "p.nii.gz").get_data_dtype() == np.float32
    assert nib.load(tmp_path / "seg.nii.gz").get_data_dtype() == np.uint8


def test_a_trailing_singleton_fourth_axis_is_dropped(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    assert load_volume(tmp_path / "a.nii.gz").shape == (3, 4, 5)
    assert load_volume(tmp_path / "a.nii.gz", ndim=None).shape == (3, 4, 5, 1)


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    def crash_halfway(image, filename):
        with open(filename, "wb") as half_written:
            half_written.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", crash_halfway)
    volume = Volume(array=np.zeros((2, 2, 2), np.uint8), affine=np.eye(4))
    with pytest.raises(OSError, match="disk full"):
        save_volume(volume, tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_writing_into_a_missing_folder_is_bad_input(tmp_path):
    volume = Volume(array=np.zeros((2, 2, 2), np.uint8), affine=np.eye(4))
    with pytest.raises(BadInput, match="does not exist"):
        save_volume(volume, tmp_path / "nowhere" / "out.nii.gz")


def test_a_zero_voxel_size_affine_is_bad_input(tmp_path):
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    image.header["srow_x"] = [0, 0, 0, 0]  # nibabel refuses to build this, scanners do not
    image.header.set_qform(None, code=0)
    raw = image.header.binaryblock + b"\0" * 4 + np.zeros(8, np.uint8).tobytes()
    (tmp_path / "flat.nii").write_bytes(raw)
    with pytest.raises(BadInput, match="affine is invalid"):
        load_volume(tmp_path / "flat.nii")
