"""`--shard I/N|auto` and `--merge`: N array tasks cover a cohort exactly once, and the merged
tables of their shards equal the table of one unsharded run (rows, and the mean/SD rows)."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.cli.subjects import take_shard
from tumorcli.errors import BadInput
from tumorcli.preprocess.inputs import SubjectInputs

runner = CliRunner()
SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
         "SLURM_ARRAY_TASK_COUNT")
SUMMARY = ("mean", "sd")
SUBJECTS, SESSIONS = 4, 2


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch):
    for name in SLURM:
        monkeypatch.delenv(name, raising=False)


def slurm_task(task: int, first: int, count: int) -> dict[str, str]:
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
            "SLURM_ARRAY_TASK_MAX": str(first + count - 1),
            "SLURM_ARRAY_TASK_COUNT": str(count)}


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def tumour(seed: int, shape=(10, 10, 6)) -> np.ndarray:
    """Labels 1–3 in a box whose size depends on `seed`, so every case has its own volumes."""
    labels = np.zeros(shape, np.uint8)
    size = 2 + seed % 5
    labels[1:1 + size, 2:8, 1:5] = 2
    labels[2:1 + size, 3:7, 2:4] = 3
    labels[2:3, 4:6, 2:3] = 1
    return labels


def head(seed: int, shape=(12, 12, 12)) -> np.ndarray:
    """A noisy ball on a zero background (12 voxels: SSIM's 11-voxel window fits)."""
    rng = np.random.default_rng(seed)
    ball = np.linalg.norm(np.indices(shape) - 5.5, axis=0) <= 5.5
    return (ball * (300 + 100 * rng.random(shape))).astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """4 subjects × 2 sessions in BraTS case folders (seg + t1c), predictions flat."""
    root = tmp_path_factory.mktemp("sharding")
    for subject in range(1, SUBJECTS + 1):
        for session in range(SESSIONS):
            case = f"BraTS-GLI-{subject:05d}-{session:03d}"
            seed = subject * 10 + session
            save(root / "ref" / case / f"{case}-seg.nii.gz", tumour(seed))
            save(root / "ref" / case / f"{case}-t1c.nii.gz", head(seed))
            save(root / "pred" / f"{case}.nii.gz", tumour(seed + 1))
            save(root / "pred-images" / f"{case}-t1c.nii.gz",
                 head(seed) + np.float32(5) * np.random.default_rng(seed).random((12, 12, 12),
                                                                                 np.float32))
    return root


def verb_args(verb: str, cohort: Path) -> list[str]:
    """The command line of each batch verb on the cohort (without -o and --shard)."""
    return {"volumes": ["volumes", str(cohort / "ref")],
            "volumes --subject": ["volumes", "--subject", str(cohort / "ref")],
            "evaluate": ["evaluate", "--pred", str(cohort / "pred"), "--ref", str(cohort / "ref")],
            "evaluate-image": ["evaluate-image", "--pred", str(cohort / "pred-images"), "--ref",
                               str(cohort / "ref"), "--modality", "t1c"]}[verb]


# What names a case in each verb's table: the mask file, the subject, the case id.
CASE_COLUMN = {"volumes": "file", "volumes --subject": "subject", "evaluate": "case",
               "evaluate-image": "case"}
VERBS = tuple(CASE_COLUMN)


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def split(rows: list[dict], column: str) -> tuple[list[dict], list[dict]]:
    """(case rows, summary rows)."""
    return ([row for row in rows if row[column] not in SUMMARY],
            [row for row in rows if row[column] in SUMMARY])


def assert_same_summary(merged: list[dict], whole: list[dict]) -> None:
    # The merged summary is computed from the 6-decimal cells of the shards' tables.
    assert [(r["case"], r.get("region")) for r in merged] == \
        [(r["case"], r.get("region")) for r in whole]
    for ours, theirs in zip(merged, whole):
        for column, value in theirs.items():
            if column in ("case", "region"):
                continue
            if value == "":
                assert ours[column] == ""
            else:
                assert float(ours[column]) == pytest.approx(float(value), abs=1e-5), column


# ---- take_shard: the partition --------------------------------------------------------------

@pytest.mark.parametrize("parts", [1, 2, 3, 4, 5])
def test_shards_of_a_subject_list_are_disjoint_and_cover_it_whatever_its_order(parts):
    names = [f"BraTS-GLI-{n:05d}-000" for n in range(1, 12)]
    subjects = [SubjectInputs(name, {}) for name in names]
    shuffled = random.Random(parts).sample(subjects, len(subjects))
    shards = [[s.name for s in take_shard(subjects, f"{part}/{parts}")]
              for part in range(1, parts + 1)]
    assert shards == [[s.name for s in take_shard(shuffled, f"{part}/{parts}")]
                      for part in range(1, parts + 1)]
    assert sorted(sum(shards, [])) == names
    assert sum(len(shard) for shard in shards) == len(names)
    assert all(shard == sorted(shard) for shard in shards)


def test_without_shard_every_subject_is_kept_in_its_order():
    subjects = [SubjectInputs(name, {}) for name in ("S2", "S1")]
    assert take_shard(subjects, None) == subjects


@pytest.mark.parametrize("first", [0, 1, 5])
def test_auto_is_the_slurm_array_task_id_minus_min_of_count(first, monkeypatch):
    subjects = [SubjectInputs(f"S{n}", {}) for n in range(7)]
    for index in range(3):
        for name, value in slurm_task(first + index, first, 3).items():
            monkeypatch.setenv(name, value)
        assert take_shard(subjects, "auto") == take_shard(subjects, f"{index + 1}/3")


def test_auto_needs_no_max_when_slurm_gives_only_id_min_and_count(monkeypatch):
    subjects = [SubjectInputs(f"S{n}", {}) for n in range(5)]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert take_shard(subjects, "auto") == take_shard(subjects, "2/2")


@pytest.mark.parametrize("environment, message", [
    ({}, "SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT not set"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1"}, "SLURM_ARRAY_TASK_COUNT not set"),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "8",
      "SLURM_ARRAY_TASK_COUNT": "5"}, "numbered 0–8, not one after another"),  # --array=0-8:2
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"},
     "SLURM_ARRAY_TASK_ID 3 lies outside the array's 1–2"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"},
     "not whole numbers"),
])
def test_auto_outside_a_contiguous_slurm_array_is_bad_input(environment, message, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BadInput, match=message) as raised:
        take_shard([SubjectInputs("S1", {})], "auto")
    assert "SLURM array" in str(raised.value)


# ---- every batch verb: cover, merge, bad --shard ---------------------------------------------

@pytest.fixture(scope="module")
def unsharded(cohort) -> dict[str, Path]:
    tables = {}
    for verb in VERBS:
        tables[verb] = cohort / f"whole-{verb.replace(' --', '-')}.csv"
        result = invoke(*verb_args(verb, cohort), "-o", str(tables[verb]), "-q")
        assert result.exit_code == 0, result.output
    return tables


@pytest.mark.parametrize("verb", VERBS)
def test_n_shards_cover_every_case_once_and_their_merge_is_the_unsharded_table(
        verb, cohort, unsharded, tmp_path):
    column = CASE_COLUMN[verb]
    header, whole = read_table(unsharded[verb])
    whole_cases, whole_summary = split(whole, column)
    assert len({row[column] for row in whole_cases}) == (
        SUBJECTS if verb == "volumes --subject" else SUBJECTS * SESSIONS)
    for parts in range(1, 6):
        tables, seen = [], []
        for part in range(1, parts + 1):
            table = tmp_path / f"shard-{parts}-{part}.csv"
            result = invoke(*verb_args(verb, cohort), "--shard", f"{part}/{parts}", "-o",
                            str(table), "-q")
            assert result.exit_code == 0, result.output
            tables.append(str(table))
            seen.append({row[column] for row in split(read_table(table)[1], column)[0]})
        for one, other in ((a, b) for i, a in enumerate(seen) for b in seen[i + 1:]):
            assert not one & other
        assert set().union(*seen) == {row[column] for row in whole_cases}
        merged = tmp_path / f"merged-{parts}.csv"
        result = invoke(verb.split()[0], "--merge", *tables, "-o", str(merged), "-q")
        assert result.exit_code == 0, result.output
        merged_header, rows = read_table(merged)
        assert merged_header == header
        merged_cases, merged_summary = split(rows, column)
        assert merged_cases == whole_cases
        assert_same_summary(merged_summary, whole_summary)


def test_a_case_found_on_one_side_only_is_reported_by_its_own_shard_alone(cohort, tmp_path):
    predictions = tmp_path / "pred"
    shutil.copytree(cohort / "pred", predictions)
    shutil.copy(predictions / "BraTS-GLI-00001-000.nii.gz",
                predictions / "BraTS-GLI-00009-000.nii.gz")  # no reference
    codes = [invoke("evaluate", "--pred", str(predictions), "--ref", str(cohort / "ref"),
                    "--shard", f"{part}/3", "-q").exit_code for part in (1, 2, 3)]
    assert sorted(codes) == [0, 0, 3]


def test_a_shard_without_cases_writes_the_header_only_and_succeeds(cohort, tmp_path):
    one = cohort / "pred" / "BraTS-GLI-00001-000.nii.gz"
    reference = cohort / "ref" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz"
    out = tmp_path / "empty.csv"
    result = invoke("evaluate", "--pred", str(one), "--ref", str(reference), "--shard", "2/2",
                    "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cases"] == 0
    assert read_table(out) == (["case", "region", "dice", "hd95_mm", "sensitivity",
                                "precision"], [])


@pytest.mark.parametrize("verb", ("volumes", "evaluate", "evaluate-image"))
@pytest.mark.parametrize("shard, message", [
    ("0/3", "--shard 0/3: expected I/N"), ("4/3", "--shard 4/3: expected I/N"),
    ("x", "--shard x: expected I/N"), ("auto", "run it inside a SLURM array job"),
])
def test_a_bad_shard_is_one_line_and_exit_2(verb, shard, message, cohort, tmp_path):
    result = invoke(*verb_args(verb, cohort), "--shard", shard, "-o", str(tmp_path / "t.csv"))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "t.csv").exists()


def test_auto_in_a_slurm_array_task_measures_that_tasks_part(cohort, tmp_path):
    auto, fixed = tmp_path / "auto.csv", tmp_path / "fixed.csv"
    result = invoke(*verb_args("volumes", cohort), "--shard", "auto", "-o", str(auto), "-q",
                    env=slurm_task(4, 3, 3))
    assert result.exit_code == 0, result.output
    assert invoke(*verb_args("volumes", cohort), "--shard", "2/3", "-o", str(fixed),
                  "-q").exit_code == 0
    assert auto.read_text() == fixed.read_text()


def test_the_installed_command_shards_by_slurm_array_task_in_a_real_process(cohort, tmp_path):
    out = tmp_path / "task-1.csv"
    environment = {k: v for k, v in os.environ.items() if k not in SLURM}
    done = subprocess.run(
        [sys.executable, "-m", "tumorcli.cli.app", "volumes", str(cohort / "ref"), "--shard",
         "auto", "-o", str(out), "--json"], capture_output=True, text=True, timeout=120,
        env={**environment, **slurm_task(1, 1, 3), "TUMOR_DEBUG": "0"})
    assert done.returncode == 0, done.stderr
    files = {Path(row["file"]).name for row in json.loads(done.stdout)["rows"]}
    assert files == {"BraTS-GLI-00001-000-seg.nii.gz", "BraTS-GLI-00002-001-seg.nii.gz",
                     "BraTS-GLI-00004-000-seg.nii.gz"}  # positions 0, 3, 6 of the 8 case ids
    assert {Path(row["file"]).name for row in read_table(out)[1]} == files


# ---- --merge ---------------------------------------------------------------------------------

def shards(verb: str, cohort: Path, folder: Path, parts: int = 2, suffix: str = ".csv",
           *extra: str) -> list[str]:
    tables = []
    for part in range(1, parts + 1):
        table = folder / f"shard-{part}{suffix}"
        result = invoke(*verb_args(verb, cohort), *extra, "--shard", f"{part}/{parts}", "-o",
                        str(table), "-q")
        assert result.exit_code == 0, result.output
        tables.append(str(table))
    return tables


def test_merge_drops_the_rows_of_a_shard_given_twice(cohort, unsharded, tmp_path):
    first, second = shards("evaluate", cohort, tmp_path)
    merged = tmp_path / "all.csv"
    result = invoke("evaluate", "--merge", first, second, first, "-o", str(merged), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["duplicates_dropped"] == 4 * 3  # 4 cases × TC, WT, ET
    assert split(read_table(merged)[1], "case")[0] == \
        split(read_table(unsharded["evaluate"])[1], "case")[0]


def test_merging_tables_with_other_columns_is_one_line_naming_the_file(cohort, tmp_path):
    plain = shards("evaluate", cohort, tmp_path, 2)[0]
    lesionwise = tmp_path / "lesionwise.csv"
    assert invoke(*verb_args("evaluate", cohort), "--lesionwise", "--shard", "2/2", "-o",
                  str(lesionwise), "-q").exit_code == 0
    result = invoke("evaluate", "--merge", plain, str(lesionwise), "-o", str(tmp_path / "a.csv"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{lesionwise}: its columns differ from those of {plain}" in \
        lines[0] and "extra lesionwise_dice" in lines[0], result.stderr
    assert not (tmp_path / "a.csv").exists()


def test_merging_another_verbs_table_is_bad_input_naming_it(cohort, unsharded, tmp_path):
    result = invoke("evaluate-image", "--merge", str(unsharded["evaluate"]), "-o",
                    str(tmp_path / "a.csv"))
    assert result.exit_code == 2
    assert f"{unsharded['evaluate']}: not a table of tumor evaluate-image" in result.stderr


def test_a_case_scored_differently_in_two_tables_is_bad_input_naming_both(cohort, tmp_path):
    first, second = shards("evaluate-image", cohort, tmp_path)
    header, rows = read_table(Path(first))
    rows[0]["psnr_3d"] = "1.5"
    edited = tmp_path / "edited.csv"
    with open(edited, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    result = invoke("evaluate-image", "--merge", first, second, str(edited), "-o",
                    str(tmp_path / "a.csv"))
    assert result.exit_code == 2
    assert f"{edited}: {rows[0]['case']} differs from the same row in {first}" in result.stderr


@pytest.mark.parametrize("verb", ("volumes --subject", "evaluate-image"))
def test_json_tables_merge_like_csv_ones(verb, cohort, unsharded, tmp_path):
    tables = shards(verb, cohort, tmp_path, 3, ".json")
    whole = tmp_path / "whole.json"
    assert invoke(*verb_args(verb, cohort), "-o", str(whole), "-q").exit_code == 0
    merged = tmp_path / "merged.json"
    result = invoke(verb.split()[0], "--merge", *tables, "-o", str(merged), "-q")
    assert result.exit_code == 0, result.output
    ours, theirs = json.loads(merged.read_text()), json.loads(whole.read_text())
    column = CASE_COLUMN[verb]
    assert split(ours, column)[0] == split(theirs, column)[0]
    assert [r[column] for r in split(ours, column)[1]] == [r[column] for r in
                                                          split(theirs, column)[1]]


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--merge", "-o", "all.csv"], "--merge needs the tables of the shards"),
    (["evaluate", "--merge", "a.csv"], "--merge needs -o/--output"),
    (["evaluate", "--merge", "a.csv", "--pred", "p", "-o", "all.csv"], "--pred cannot go with"),
    (["volumes", "--merge", "a.csv", "--shard", "1/2", "-o", "all.csv"], "--shard cannot go"),
    (["evaluate", "a.csv", "-o", "all.csv"], "a.csv: tables are read only with --merge"),
    (["evaluate-image", "--merge", "a.csv", "b.json", "-o", "all.csv"], "a mix of .csv and"),
    (["volumes", "--merge", "missing.csv", "-o", "all.csv"], "missing.csv: not found"),
])
def test_bad_merge_options_are_one_line_and_exit_2(args, message, tmp_path):
    result = invoke(*[str(tmp_path / a) if a.endswith((".csv", ".json")) else a for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_merging_csv_tables_into_a_json_file_is_refused(cohort, tmp_path):
    tables = shards("volumes", cohort, tmp_path)
    result = invoke("volumes", "--merge", *tables, "-o", str(tmp_path / "all.json"))
    assert result.exit_code == 2 and "the merged tables are .csv" in result.stderr
