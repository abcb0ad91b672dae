"""`--atlas mni`: the scanner DICOM of the sample subject lands on the shipped ICBM 2009a grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.io.itk import Grid
from tumorcli.io.volume import load_volume
from tumorcli.preprocess.brain import load_atlas

SUBJECT = Path(__file__).resolve().parent.parent / "sample_data" / "native-dicom" / \
    "BraTS-GLI-00001-000"


def test_the_mni_atlas_is_the_icbm_2009a_grid_with_a_brain_of_plausible_size():
    atlas = load_atlas("mni")
    assert atlas.image.shape == (197, 233, 189) and atlas.image.orientation == "RAS"
    assert np.allclose(atlas.image.spacing, 1.0)
    assert 1500 < atlas.brain.sum() / 1000 < 2000  # cm³, brain incl. CSF of the MNI template


def test_preprocess_onto_mni_at_2mm_gives_a_brain_mask_and_records_the_atlas(tmp_path):
    result = CliRunner().invoke(app, ["preprocess", "-i", str(SUBJECT), "-o", str(tmp_path),
                                      "--atlas", "mni", "--spacing", "2", "--json", "-q"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / SUBJECT.name
    expected = Grid.of(load_atlas("mni").image).with_spacing(2.0)
    mask = load_volume(folder / f"{SUBJECT.name}-brainmask.nii.gz")
    t1c = load_volume(folder / f"{SUBJECT.name}-t1c.nii.gz")
    assert mask.shape == t1c.shape == expected.shape
    assert np.allclose(t1c.affine, expected.affine)
    brain_cm3 = mask.array.sum() * mask.voxel_volume_mm3 / 1000
    assert 1300 < brain_cm3 < 2200, brain_cm3  # the subject's brain scaled into MNI's size
    inside, outside = t1c.array[mask.array > 0], t1c.array[mask.array == 0]
    assert abs(inside.mean()) < 0.05 and abs(inside.std() - 1) < 0.05  # z-scored in the brain
    assert np.all(outside == 0)
    record = json.loads((folder / "preprocess.json").read_text())
    assert "ICBM 2009a" in json.dumps(record["atlas"])


def test_a_user_template_with_its_brain_mask_beside_it_is_the_output_grid(tmp_path):
    from tumorcli.io.volume import Volume, save_volume

    shipped = load_atlas("sri24")
    template = Volume(shipped.image.array, shipped.image.affine)
    save_volume(template, tmp_path / "mytemplate.nii.gz")
    save_volume(template.with_array((shipped.brain > 0.5).astype(np.uint8)),
                tmp_path / "mytemplate-brainmask.nii.gz")
    result = CliRunner().invoke(app, [
        "preprocess", "-i", str(SUBJECT), "-o", str(tmp_path / "out"), "--spacing", "3",
        "--atlas", str(tmp_path / "mytemplate.nii.gz"), "--no-n4", "-q"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / SUBJECT.name
    mask = load_volume(folder / f"{SUBJECT.name}-brainmask.nii.gz")
    expected = Grid.of(template.reoriented("RAS")).with_spacing(3.0)
    assert mask.shape == expected.shape and np.allclose(mask.affine, expected.affine)
    assert 1000 < mask.array.sum() * mask.voxel_volume_mm3 / 1000 < 1800
    record = json.loads((folder / "preprocess.json").read_text())
    assert "mytemplate.nii.gz" in json.dumps(record["atlas"])
