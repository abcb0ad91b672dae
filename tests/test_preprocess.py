"""`tumorcli.preprocess` on a native-space synthetic subject (small, 2 mm), against its truth.

One preprocessing run (SRI24 atlas at 2 mm, all steps) is shared by the tests of this module.
"""

from __future__ import annotations

import json
import numpy as np
import pytest
import SimpleITK as sitk

from tumorcli.io import itk
from tumorcli.io.volume import load_volume
from tumorcli.preprocess import brain, intensity, quality, spatial
from tumorcli.preprocess.inputs import find_cohort
from tumorcli.preprocess.pipeline import PreprocessConfig, invert, preprocess_subject

SUBJECT = "BraTS-GLI-00001-000"


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> dict:
    """A native-space subject with skull and its truth: transforms and brain mask (atlas grid)."""
    from tumorcli.synth.cohort import CohortConfig, make_cohort, session_truth, simulate_subject
    from tumorcli.synth.grid import output_grid

    folder = tmp_path_factory.mktemp("native") / "cohort"
    folder.mkdir()
    config = CohortConfig(subjects=1, sessions=1, seed=1, space="native", size="small",
                          skull=True)
    make_cohort(config, folder)
    grid = output_grid("small")
    truth = session_truth(simulate_subject(config, 0), 0, grid)
    transforms = json.loads((folder / SUBJECT / f"{SUBJECT}-transforms.json").read_text())
    return {"folder": folder, "brain_mask": truth.brain_mask, "grid_affine": grid.affine,
            "native_to_atlas": {m: np.array(v["native_to_atlas_world"])
                                for m, v in transforms["modalities"].items()}}


@pytest.fixture(scope="module")
def run(native, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("prep")
    subject = find_cohort(native["folder"])[0]
    summary = preprocess_subject(subject, out, PreprocessConfig(atlas="sri24", spacing_mm=2.0))
    folder = out / SUBJECT
    return {"summary": summary, "folder": folder, "out": out, "subject": subject,
            "record": json.loads((folder / "preprocess.json").read_text())}


def _truth_on_output(native: dict, record: dict) -> np.ndarray:
    """The true brain mask on the output grid (output mm -> T1c mm -> truth atlas mm)."""
    grid = itk.Grid(tuple(record["output_grid"]["shape"]),
                        np.array(record["output_grid"]["affine"]))
    output_to_truth = native["native_to_atlas"]["t1c"] @ np.array(
        record["transforms"]["output_to_t1c_ras"])
    fraction = spatial.resample_onto(
        spatial.to_sitk(native["brain_mask"].astype(np.float32), native["grid_affine"]), grid,
        itk.transform_from_ras(output_to_truth))
    return fraction >= 0.5


def test_every_modality_lands_on_the_2mm_sri24_grid_with_mask_record_and_tfm(run):
    folder, record = run["folder"], run["record"]
    for suffix in ("t1n", "t1c", "t2w", "t2f", "brainmask"):
        volume = load_volume(folder / f"{SUBJECT}-{suffix}.nii.gz")
        assert volume.shape == (120, 120, 78)
        assert np.allclose(volume.affine, record["output_grid"]["affine"])
    assert record["atlas"]["name"] == "sri24" and "SRI24" in record["atlas"]["licence"]
    assert [step["name"] for step in record["steps"]] == [
        "read", "coregister", "atlas_register", "resample", "brain_mask", "n4", "normalize",
        "write"]
    for modality in ("t1n", "t1c", "t2w", "t2f"):
        assert len(record["inputs"][modality]["sha256"]) == 64
        entry = record["transforms"][modality]
        tfm = sitk.ReadTransform(str(folder / entry["file"]))
        assert np.allclose(itk.ras_matrix(tfm), entry["output_to_native_ras"], atol=1e-6)
    assert not list(run["out"].glob(".*")), "no temporary folders left behind"


def test_coregistration_error_is_below_1mm_over_brain_voxels(native, run):
    points = quality.points_of(native["brain_mask"], native["grid_affine"], step=2)
    for modality in ("t1n", "t2w", "t2f"):
        estimated = np.array(run["record"]["transforms"][modality]["t1c_to_native_ras"])
        error = quality.coregistration_error_mm(estimated, native["native_to_atlas"], modality,
                                                points)
        assert error < 1.0, f"{modality}: {error:.2f} mm"


def test_brain_mask_matches_the_true_brain(native, run):
    mask = load_volume(run["folder"] / f"{SUBJECT}-brainmask.nii.gz").array > 0
    dice = quality.dice(mask, _truth_on_output(native, run["record"]))
    assert dice >= 0.95, f"brain-mask Dice {dice:.3f}"  # measured 0.97 (affine only: 0.95)


def test_zscore_is_zero_mean_unit_sd_inside_the_brain_and_zero_outside(run):
    mask = load_volume(run["folder"] / f"{SUBJECT}-brainmask.nii.gz").array > 0
    t2f = load_volume(run["folder"] / f"{SUBJECT}-t2f.nii.gz").array
    assert abs(t2f[mask].mean()) < 1e-3 and abs(t2f[mask].std() - 1) < 1e-3
    assert np.all(t2f[~mask] == 0)


def test_n4_lowers_the_white_matter_coefficient_of_variation(run):
    record, subject = run["record"], run["subject"]
    grid = itk.Grid(tuple(record["output_grid"]["shape"]),
                        np.array(record["output_grid"]["affine"]))
    t1c = load_volume(subject.images["t1c"])
    raw = spatial.resample_onto(spatial.volume_to_sitk(t1c), grid, itk.transform_from_ras(
        np.array(record["transforms"]["t1c"]["output_to_native_ras"])))
    mask = load_volume(run["folder"] / f"{SUBJECT}-brainmask.nii.gz").array > 0
    atlas = brain.load_atlas("sri24")
    white = spatial.resample_onto(spatial.to_sitk(atlas.white_matter, atlas.image.affine),
                                  grid) >= 0.9
    white &= mask
    corrected, field = intensity.n4_correct(raw, grid.affine, mask)
    before = quality.white_matter_cov(raw, white)
    after = quality.white_matter_cov(corrected, white)
    assert after < 0.85 * before, f"WM CoV {before:.3f} -> {after:.3f}"


def test_invert_takes_a_mask_to_native_and_back_with_dice_above_0_98(run, tmp_path):
    mask_path = run["folder"] / f"{SUBJECT}-brainmask.nii.gz"
    native_path = tmp_path / "mask-native.nii.gz"
    result = invert(mask_path, run["folder"] / "preprocess.json", native_path, onto="t1c")
    native_mask = load_volume(native_path)
    t1c = load_volume(run["subject"].images["t1c"])
    assert native_mask.shape == t1c.shape and np.allclose(native_mask.affine, t1c.affine)
    assert result["labels"] is True
    # and back: native grid -> output grid through the record's transform
    record = run["record"]
    grid = itk.Grid(tuple(record["output_grid"]["shape"]),
                        np.array(record["output_grid"]["affine"]))
    output_to_native = np.array(record["transforms"]["t1c"]["output_to_native_ras"])
    back = spatial.resample_labels(native_mask.array, native_mask.affine, grid,
                                   itk.transform_from_ras(output_to_native))
    dice = quality.dice(back > 0, load_volume(mask_path).array > 0)
    assert dice >= 0.98, f"round-trip Dice {dice:.4f}"


def test_a_second_run_with_the_same_inputs_and_options_is_skipped(run):
    again = preprocess_subject(run["subject"], run["out"],
                               PreprocessConfig(atlas="sri24", spacing_mm=2.0))
    assert again["status"] == "skipped"


def test_geometry_check_rejects_nan_voxels_naming_the_file():
    from tumorcli.errors import BadInput
    from tumorcli.io.volume import Volume

    array = np.ones((8, 8, 8), np.float32)
    array[0, 0, 0] = np.nan
    with pytest.raises(BadInput, match="scan.nii.gz: t2f holds NaN"):
        spatial.checked(Volume(array, np.eye(4), source="scan.nii.gz"), "t2f")


def test_registration_accepts_a_thin_in_plane_thick_slice_scan():
    """0.9 × 0.9 × 5 mm: only the in-plane axes are smoothed down to the 2 mm working grid."""
    from tumorcli.io.volume import Volume

    i, j, k = np.meshgrid(np.arange(120), np.arange(120), np.arange(16), indexing="ij")
    head = ((((i - 60) * 0.9 / 45) ** 2 + ((j - 60) * 0.9 / 35) ** 2
             + ((k - 8) * 5.0 / 30) ** 2) < 1).astype(np.float32) * 100
    head[70:90, 40:60, 6:12] += 80  # a bright block off centre: no symmetry to slide along
    image = spatial.volume_to_sitk(Volume(head, np.diag([0.9, 0.9, 5.0, 1.0])))
    transform = spatial.coregister(image, image)
    points = quality.points_of(head > 0, np.diag([0.9, 0.9, 5.0, 1.0]), step=4)
    moved = quality.apply(itk.ras_matrix(transform), points)
    assert np.linalg.norm(moved - points, axis=1).mean() < 0.5
