"""`tumor evaluate`: cases matched by id, the CSV contract, partial batches and bad grids."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.io.volume import load_volume
from tumorcli.metrics.cases import case_id
from tumorcli.metrics.evaluation import evaluate_case
from tumorcli.metrics.regions import parse_labels

runner = CliRunner()
AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


def save_mask(path: Path, labels: np.ndarray, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), path)
    return path


def tumour(shift: int = 0, shape=(24, 24, 16)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[4 + shift:16 + shift, 5:17, 3:12] = 2
    labels[7 + shift:13 + shift, 8:14, 5:10] = 3
    labels[9 + shift:11 + shift, 10:12, 6:8] = 1
    return labels


@pytest.fixture
def brats_folders(tmp_path):
    """References in BraTS case folders (with images), predictions flat, three cases."""
    for number, shift in ((1, 0), (2, 1), (3, 2)):
        case = f"BraTS-GLI-0000{number}-000"
        save_mask(tmp_path / "ref" / case / f"{case}-seg.nii.gz", tumour())
        save_mask(tmp_path / "ref" / case / f"{case}-t1c.nii.gz", tumour() * 100)
        save_mask(tmp_path / "pred" / f"{case}.nii.gz", tumour(shift))
    return tmp_path


def read_csv(path: Path) -> tuple[str, list[dict]]:
    with open(path, newline="") as handle:
        header = handle.readline().strip()
        handle.seek(0)
        return header, list(csv.DictReader(handle))


def test_case_ids_follow_brats_names():
    assert case_id("a/BraTS-GLI-00001-000-seg.nii.gz") == "BraTS-GLI-00001-000"
    assert case_id("BraTS-GLI-00001-000.nii") == "BraTS-GLI-00001-000"
    assert case_id("case_7_seg.nii.gz") == "case_7"


def test_folders_are_matched_by_case_and_written_with_exact_columns_and_means(brats_folders):
    out = brats_folders / "metrics.csv"
    result = runner.invoke(app, ["evaluate", "--pred", str(brats_folders / "pred"),
                                 "--ref", str(brats_folders / "ref"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    header, rows = read_csv(out)
    assert header == "case,region,dice,hd95_mm,sensitivity,precision"
    assert [(r["case"], r["region"]) for r in rows[:3]] == \
        [("BraTS-GLI-00001-000", "TC"), ("BraTS-GLI-00001-000", "WT"),
         ("BraTS-GLI-00001-000", "ET")]
    assert len(rows) == 3 * 3 + 3 and [r["case"] for r in rows[-3:]] == ["mean"] * 3
    assert all(float(r["dice"]) == 1.0 and float(r["hd95_mm"]) == 0.0 for r in rows[:3])
    case_2 = evaluate_case("c", load_volume(brats_folders / "pred" / "BraTS-GLI-00002-000.nii.gz"),
                           load_volume(brats_folders / "ref" / "BraTS-GLI-00002-000" /
                                       "BraTS-GLI-00002-000-seg.nii.gz"), parse_labels())
    assert float(rows[3]["dice"]) == pytest.approx(case_2[0].dice, abs=1e-6)
    wt_dice = [float(r["dice"]) for r in rows[:9] if r["region"] == "WT"]
    assert float(rows[-2]["dice"]) == pytest.approx(np.mean(wt_dice), abs=1e-6)


def test_two_files_are_one_case_whatever_their_names(tmp_path):
    prediction = save_mask(tmp_path / "model_output.nii.gz", tumour(1))
    reference = save_mask(tmp_path / "BraTS-GLI-00009-000-seg.nii.gz", tumour())
    result = runner.invoke(app, ["evaluate", "--pred", str(prediction), "--ref", str(reference),
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cases"] == 1 and report["rows"][0]["case"] == "BraTS-GLI-00009-000"
    assert 0 < report["rows"][1]["dice"] < 1 and report["rows"][1]["hd95_mm"] == pytest.approx(1.0)


def test_a_case_on_one_side_only_is_a_partial_batch_with_the_others_written(brats_folders):
    (brats_folders / "pred" / "BraTS-GLI-00002-000.nii.gz").unlink()
    out = brats_folders / "metrics.csv"
    result = runner.invoke(app, ["evaluate", "--pred", str(brats_folders / "pred"),
                                 "--ref", str(brats_folders / "ref"), "-o", str(out)])
    assert result.exit_code == 3
    assert "BraTS-GLI-00002-000-seg.nii.gz: case has no prediction" in result.output
    assert "1 of 3 cases not scored" in result.output
    _, rows = read_csv(out)
    assert sorted({r["case"] for r in rows}) == ["BraTS-GLI-00001-000", "BraTS-GLI-00003-000",
                                                 "mean"]


def test_a_grid_mismatch_is_bad_input_naming_both_files(tmp_path):
    prediction = save_mask(tmp_path / "p.nii.gz", tumour(), np.diag([1.0, 1.2, 2.5, 1.0]))
    reference = save_mask(tmp_path / "r-seg.nii.gz", tumour())
    result = subprocess.run(
        [sys.executable, "-m", "tumorcli.cli.app", "evaluate", "--pred", str(prediction),
         "--ref", str(reference), "-o", str(tmp_path / "out.csv")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TUMOR_DEBUG": "0"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "p.nii.gz" in lines[0] and "r-seg.nii.gz" in lines[0] and "same grid" in lines[0]
    assert not (tmp_path / "out.csv").exists()


def test_a_shape_mismatch_and_a_non_integer_prediction_are_bad_input(tmp_path):
    reference = save_mask(tmp_path / "r.nii.gz", tumour())
    smaller = save_mask(tmp_path / "small.nii.gz", tumour(shape=(24, 24, 15)))
    result = runner.invoke(app, ["evaluate", "--pred", str(smaller), "--ref", str(reference)])
    assert result.exit_code == 2 and "small.nii.gz (24×24×15)" in result.output
    soft = save_mask(tmp_path / "soft.nii.gz", tumour().astype(np.float32) * 0.5)
    result = runner.invoke(app, ["evaluate", "--pred", str(soft), "--ref", str(reference)])
    assert result.exit_code == 2 and "soft.nii.gz: not a label mask" in result.output


def test_a_missing_prediction_file_is_bad_input(tmp_path):
    reference = save_mask(tmp_path / "r.nii.gz", tumour())
    result = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "nope.nii.gz"),
                                 "--ref", str(reference)])
    assert result.exit_code == 2 and "nope.nii.gz: not found" in result.output


def test_lesionwise_adds_its_columns(brats_folders):
    out = brats_folders / "metrics.csv"
    result = runner.invoke(app, ["evaluate", "--pred", str(brats_folders / "pred"),
                                 "--ref", str(brats_folders / "ref"), "-o", str(out),
                                 "--lesionwise"])
    assert result.exit_code == 0, result.output
    header, rows = read_csv(out)
    assert header == ("case,region,dice,hd95_mm,sensitivity,precision,lesionwise_dice,"
                      "lesionwise_hd95_mm,lesions,lesions_detected,lesions_missed,"
                      "false_positive_lesions")
    first = rows[0]
    assert float(first["lesionwise_dice"]) == 1.0 and int(first["lesions"]) == 1
    assert int(first["false_positive_lesions"]) == 0


def test_two_processes_give_the_same_table_and_the_same_partial_batch(brats_folders):
    save_mask(brats_folders / "pred" / "BraTS-GLI-00004-000.nii.gz", tumour() * 2)  # no ref
    save_mask(brats_folders / "ref" / "BraTS-GLI-00004-000" / "BraTS-GLI-00004-000-seg.nii.gz",
              tumour(shape=(24, 24, 15)))
    tables = []
    for jobs in ("1", "2"):
        out = brats_folders / f"metrics-{jobs}.csv"
        result = runner.invoke(app, ["evaluate", "--pred", str(brats_folders / "pred"), "--ref",
                                     str(brats_folders / "ref"), "-o", str(out), "-j", jobs])
        assert result.exit_code == 3
        assert "1 of 4 cases not scored" in result.output and "resample" in result.output
        tables.append(out.read_text())
    assert tables[0] == tables[1]
