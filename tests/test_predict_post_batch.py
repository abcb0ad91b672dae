"""`tumor predict-post --cohort`: the pre-treatment session of every patient, with the model
loaded once; `--shard I/N|auto` splits the patients so N array tasks cover each exactly once; a
corrupt case fails alone (exit 3); a rerun skips what is done without touching it.

The tiny model of tests/test_predict_post.py (4 + 4 training steps) pins the plumbing only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from seg_factory import write_cohort, write_post_cohort
from test_predict_post import TINY
from tumorcli.cli.app import app
from tumorcli.cli.batch import record_path
from tumorcli.io.volume import load_volume

runner = CliRunner()
PATIENTS = 3
PRE = [f"BraTS-GLI-{patient:05d}-000" for patient in range(1, PATIENTS + 1)]
SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
         "SLURM_ARRAY_TASK_COUNT")


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch):
    for name in SLURM:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """3 patients × 2 sessions and cohort.csv (odd patients short, even long survivors)."""
    return write_post_cohort(tmp_path_factory.mktemp("post_batch"), patients=PATIENTS)


@pytest.fixture(scope="module")
def model(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("post_batch_model") / "tiny-post"
    result = runner.invoke(app, ["train", "predict-post", "--data", str(cohort), "-o", str(out),
                                 "--autoencoder-steps", "4", "--denoiser-steps", "4", *TINY,
                                 "-q"])
    assert result.exit_code == 0, result.output
    return out


def predict(model: Path, cohort: Path, out: Path, *args: str, env: dict | None = None):
    return runner.invoke(app, ["predict-post", "--cohort", str(cohort), "-o", str(out),
                               "--model", str(model), *args, "--json"], env=env)


def statuses(result) -> dict[str, str]:
    return {row["subject"]: row["status"] for row in json.loads(result.stdout)["subjects"]}


def written(out: Path, case: str) -> list[Path]:
    prediction = out / f"{case}-post-t1c.nii.gz"
    return [prediction, record_path(prediction)]


def mtimes(paths: list[Path]) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in paths}


def test_shards_of_1_to_3_are_disjoint_cover_every_patient_and_predict_as_one_run(
        model, cohort, tmp_path):
    predictions: dict[int, dict[str, np.ndarray]] = {}
    for parts in (1, 2, 3):
        out, covered = tmp_path / f"of-{parts}", []
        for part in range(1, parts + 1):
            result = predict(model, cohort, out, "--shard", f"{part}/{parts}")
            assert result.exit_code == 0, result.output
            assert set(statuses(result).values()) <= {"done"}
            covered += list(statuses(result))
        assert sorted(covered) == PRE   # each pre session once; no follow-up session
        predictions[parts] = {case: load_volume(out / f"{case}-post-t1c.nii.gz").array
                              for case in PRE}
    for parts in (2, 3):
        assert all(np.array_equal(predictions[parts][case], predictions[1][case])
                   for case in PRE)
    task_2_of_3 = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "5",
                   "SLURM_ARRAY_TASK_MAX": "7", "SLURM_ARRAY_TASK_COUNT": "3"}
    auto = predict(model, cohort, tmp_path / "auto", "--shard", "auto", env=task_2_of_3)
    assert auto.exit_code == 0, auto.output
    assert list(statuses(auto)) == [PRE[1]]
    survival = {row["subject"]: row["survival"] for row in json.loads(auto.stdout)["subjects"]}
    assert survival == {PRE[1]: "long"}   # patient 2's class in cohort.csv


def test_a_corrupt_case_fails_alone_with_exit_3_and_a_rerun_skips_the_others_untouched(
        model, cohort, tmp_path):
    broken = tmp_path / "cohort"
    shutil.copytree(cohort, broken)
    scan = broken / PRE[1] / f"{PRE[1]}-t1c.nii.gz"
    scan.write_bytes(scan.read_bytes()[: scan.stat().st_size // 2])
    out = tmp_path / "posts"
    first = predict(model, broken, out)
    assert first.exit_code == 3, first.output
    assert statuses(first) == {PRE[0]: "done", PRE[1]: "failed", PRE[2]: "done"}
    summary = json.loads(first.stdout)["summary"]
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 0, 1)
    assert f"{PRE[1]}-t1c.nii.gz" in summary["failures"][0]["error"]
    assert "1 of 3 patients failed" in first.stderr
    assert "failed:" in (out / "logs" / f"{PRE[1]}.log").read_text()
    assert not (out / f"{PRE[1]}-post-t1c.nii.gz").exists()
    finished = mtimes([path for case in (PRE[0], PRE[2]) for path in written(out, case)])

    again = predict(model, broken, out)
    assert again.exit_code == 3, again.output
    assert statuses(again) == {PRE[0]: "skipped", PRE[1]: "failed", PRE[2]: "skipped"}
    assert mtimes(list(finished)) == finished
    assert "skipped:" in (out / "logs" / f"{PRE[0]}.log").read_text().splitlines()[-1]

    shutil.copy(cohort / PRE[1] / scan.name, scan)   # the scan sent again
    fixed = predict(model, broken, out)
    assert fixed.exit_code == 0, fixed.output
    assert statuses(fixed) == {PRE[0]: "skipped", PRE[1]: "done", PRE[2]: "skipped"}
    assert mtimes(list(finished)) == finished
    assert [path for path in out.rglob(".*")] == []


def test_masks_from_seg_dir_a_fixed_class_and_changed_options_refused_unless_overwrite(
        model, cohort, tmp_path):
    segs = tmp_path / "segs"   # as tumor segment -o segs names them
    segs.mkdir()
    for case in PRE:
        own = nib.load(cohort / case / f"{case}-seg.nii.gz")
        shifted = np.roll(np.asarray(own.dataobj), 6, axis=0)
        nib.save(nib.Nifti1Image(shifted, own.affine), segs / f"{case}-seg.nii.gz")
    own_masks, seg_dir = tmp_path / "own", tmp_path / "from-segs"
    assert predict(model, cohort, own_masks, "--survival", "short").exit_code == 0
    result = predict(model, cohort, seg_dir, "--survival", "short", "--seg-dir", str(segs))
    assert result.exit_code == 0, result.output
    case = PRE[0]
    assert not np.array_equal(load_volume(own_masks / f"{case}-post-t1c.nii.gz").array,
                              load_volume(seg_dir / f"{case}-post-t1c.nii.gz").array)
    record = json.loads(record_path(seg_dir / f"{case}-post-t1c.nii.gz").read_text())
    assert record["made_from"]["survival"] == "short" and record["made_by"] == "tumor predict-post"

    other = predict(model, cohort, seg_dir, "--survival", "long", "--seg-dir", str(segs))
    assert other.exit_code == 3 and set(statuses(other).values()) == {"failed"}
    assert "made from other inputs or options" in other.stdout and "--overwrite" in other.stderr
    redone = predict(model, cohort, seg_dir, "--survival", "long", "--seg-dir", str(segs),
                     "--overwrite")
    assert redone.exit_code == 0 and set(statuses(redone).values()) == {"done"}

    table = tmp_path / "classes.csv"   # patient 3 missing, per-case ids for the others
    table.write_text(f"subject,survival_class\n{PRE[0]},short\n{PRE[1]},long\n")
    missing = predict(model, cohort, tmp_path / "table", "--survival-table", str(table))
    assert missing.exit_code == 3
    assert statuses(missing) == {PRE[0]: "done", PRE[1]: "done", PRE[2]: "failed"}
    assert "no row for BraTS-GLI-00003" in missing.stdout


@pytest.mark.parametrize("args, message", [
    (["--pre", "x.nii.gz"], "--pre is for one patient, not with --cohort"),
    (["--uncertainty", "sd.nii.gz"], "--uncertainty is for one patient"),
    (["-o", "post.nii.gz"], "-o must be a folder with --cohort"),
    (["-o", "COHORT"], "-o is the cohort itself"),
    (["--survival", "short", "--survival-table", "t.csv"], "--survival and --survival-table"),
    (["--survival-table", "nowhere.csv"], "nowhere.csv: not found, so no survival class"),
    (["--shard", "4/3", "--survival", "short"], "--shard 4/3: expected I/N"),
])
def test_bad_cohort_options_are_one_line_and_exit_2(cohort, tmp_path, args, message):
    args = [str(cohort) if arg == "COHORT" else arg for arg in args]
    output = [] if "-o" in args else ["-o", str(tmp_path / "posts")]
    result = runner.invoke(app, ["predict-post", "--cohort", str(cohort), *output, *args])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("args, message", [
    (["--shard", "1/2"], "--shard applies to --cohort"),
    (["--seg-dir", "segs"], "--seg-dir applies to --cohort"),
])
def test_cohort_options_without_a_cohort_are_bad_input(cohort, tmp_path, args, message):
    case = cohort / PRE[0]
    result = runner.invoke(app, ["predict-post", "--pre", str(case / f"{PRE[0]}-t1c.nii.gz"),
                                 "--mask", str(case / f"{PRE[0]}-seg.nii.gz"), "--survival",
                                 "short", "-o", str(tmp_path / "x.nii.gz"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_cohort_without_a_table_needs_a_fixed_class(tmp_path):
    root = write_cohort(tmp_path / "c", patients=1, sessions=1)
    result = runner.invoke(app, ["predict-post", "--cohort", str(root), "-o",
                                 str(tmp_path / "posts")])
    assert result.exit_code == 2 and "cohort.csv: not found" in result.output
    assert "--survival short|long|none" in result.output
