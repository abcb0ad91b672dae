"""Batches that survive a bad subject and a killed process (cli/batch.py): the others finish,
the failure is reported with its reason (summary, OUT/logs/<subject>.log, exit code 3), a rerun
skips what is done without touching it, and SIGKILL leaves nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from seg_factory import write_subject
from tumorcli.cli.app import app
from tumorcli.cli.batch import record_path
from tumorcli.preprocess.inputs import sha256_of

runner = CliRunner()
FAST = ["--atlas", "none", "--no-skull-strip", "--no-n4"]  # preprocess in ~0.5 s a subject
SHAPE = (32, 32, 24)


def cohort(folder: Path, subjects: int) -> Path:
    for index in range(1, subjects + 1):
        write_subject(folder, f"S{index}", seed=400 + index, shape=SHAPE)
    return folder


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def command(verb: str, cohort: Path, out: Path) -> list[str]:
    return [verb, "-i", str(cohort), "-o", str(out), *(FAST if verb == "preprocess" else [])]


def final(verb: str, out: Path, subject: str) -> Path:
    """What a verb makes of one subject, renamed into place when complete."""
    return out / subject if verb == "preprocess" else out / f"{subject}-seg.nii.gz"


def outputs(verb: str, out: Path, subject: str) -> list[Path]:
    """The files a verb wrote for one subject (its folder, or its labels and their record)."""
    if verb == "preprocess":
        return sorted(p for p in (out / subject).rglob("*") if p.is_file())
    labels = final(verb, out, subject)
    return [labels, record_path(labels)] if labels.exists() else []


def mtimes(paths: list[Path]) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in paths}


def statuses(result) -> dict[str, str]:
    return {row["subject"]: row["status"] for row in json.loads(result.stdout)["subjects"]}


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*")]


def plant_leftover(verb: str, out: Path, subject: str) -> Path:
    """What a kill during a write leaves: a temporary beside the final name, as atomic.py names
    it (a folder for preprocess, a file for segment)."""
    cut_short = out / f".tmp-0123456789ab-{final(verb, out, subject).name}"
    if verb == "preprocess":
        cut_short.mkdir()
        (cut_short / f"{subject}-t1c.nii.gz").write_bytes(b"\x1f\x8b")
    else:
        cut_short.write_bytes(b"\x1f\x8b")
    return cut_short


@pytest.mark.parametrize("verb", ["preprocess", "segment"])
def test_a_corrupt_subject_fails_alone_with_exit_3_and_a_rerun_skips_the_others_untouched(
        verb, tmp_path):
    subjects = cohort(tmp_path / "cohort", 3)
    truncate(subjects / "S2" / "S2-t1c.nii.gz")
    out = tmp_path / "out"
    first = runner.invoke(app, [*command(verb, subjects, out), "--json"])
    assert first.exit_code == 3, first.output
    assert statuses(first) == {"S1": "done", "S2": "failed", "S3": "done"}
    summary = json.loads(first.stdout)["summary"]
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 0, 1)
    assert "S2-t1c.nii.gz" in summary["failures"][0]["error"]
    assert "truncated" in summary["failures"][0]["error"]
    assert "1 of 3 subjects failed" in first.stderr and str(out / "logs") in first.stderr
    log = (out / "logs" / "S2.log").read_text()
    assert f"{verb} [" in log and "failed:" in log and "truncated" in log
    assert "done in" in (out / "logs" / "S1.log").read_text()
    finished = {name: mtimes(outputs(verb, out, name)) for name in ("S1", "S3")}
    assert all(finished.values()) and not final(verb, out, "S2").exists()

    again = runner.invoke(app, [*command(verb, subjects, out), "--json"])
    assert again.exit_code == 3, again.output
    assert statuses(again) == {"S1": "skipped", "S2": "failed", "S3": "skipped"}
    assert {name: mtimes(outputs(verb, out, name)) for name in finished} == finished
    assert "skipped:" in (out / "logs" / "S1.log").read_text().splitlines()[-1]

    write_subject(tmp_path / "cohort", "S2", seed=402, shape=SHAPE)  # the scan sent again
    cut_short = plant_leftover(verb, out, "S2")
    fixed = runner.invoke(app, [*command(verb, subjects, out), "--json"])
    assert fixed.exit_code == 0, fixed.output
    assert statuses(fixed) == {"S1": "skipped", "S2": "done", "S3": "skipped"}
    assert {name: mtimes(outputs(verb, out, name)) for name in finished} == finished
    assert not cut_short.exists() and leftovers(out) == []


def test_labels_from_other_inputs_or_options_are_refused_unless_overwrite(tmp_path):
    subjects = cohort(tmp_path / "cohort", 2)
    out = tmp_path / "out"
    assert runner.invoke(app, command("segment", subjects, out) + ["-q"]).exit_code == 0
    other = runner.invoke(app, command("segment", subjects, out) + ["--no-postprocess", "--json"])
    assert other.exit_code == 3
    assert set(statuses(other).values()) == {"failed"}
    assert "made from other inputs or options" in other.stdout and "--overwrite" in other.stderr
    image = nib.load(subjects / "S1" / "S1-t2f.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 1.01, image.affine),
             subjects / "S1" / "S1-t2f.nii.gz")  # a new FLAIR for S1 only
    changed = runner.invoke(app, command("segment", subjects, out) + ["--json"])
    assert changed.exit_code == 3 and statuses(changed) == {"S1": "failed", "S2": "skipped"}
    redone = runner.invoke(app, command("segment", subjects, out) + ["--overwrite", "--json"])
    assert redone.exit_code == 0 and statuses(redone) == {"S1": "done", "S2": "done"}


def test_sigkill_mid_batch_leaves_no_partial_file_and_the_rerun_completes(tmp_path):
    verb = "segment"  # preprocess's folders go through the same Batch (leftovers: test above)
    subjects = cohort(tmp_path / "cohort", 5)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "tumorcli", *command(verb, subjects, out), "-q"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:  # kill it as soon as the first subject is done, while it works on the next
        deadline = time.monotonic() + 120
        while not (out / "logs" / "S1.log").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the first subject took over 2 minutes"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()

    written = [name for name in ("S1", "S2", "S3", "S4", "S5")
               if final(verb, out, name).exists()]
    assert "S1" in written and len(written) < 5, written
    for name in written:  # under its final name every output is whole
        if verb == "preprocess":
            record = json.loads((out / name / "preprocess.json").read_text())
            files = [out / name / file for file in record["outputs"].values()]
        else:
            labels = final(verb, out, name)
            files = [labels]
            sha = json.loads(record_path(labels).read_text())["outputs"][labels.name]
            assert sha256_of(labels) == sha
        for file in files:
            if file.name.endswith(".nii.gz"):
                assert nib.load(file).get_fdata().shape == SHAPE
    before = mtimes([p for name in written for p in outputs(verb, out, name)])
    plant_leftover(verb, out, "S5")  # a kill during S5's write, had the kill come then

    rerun = runner.invoke(app, [*command(verb, subjects, out), "--json"])
    assert rerun.exit_code == 0, rerun.output
    assert {name for name, status in statuses(rerun).items() if status == "skipped"} == \
        set(written)
    assert all(final(verb, out, name).exists() for name in ("S1", "S2", "S3", "S4", "S5"))
    assert mtimes(list(before)) == before
    assert leftovers(out) == [], leftovers(out)


def test_sigterm_during_a_write_removes_its_temporary_logs_it_and_exits_143(tmp_path):
    from tumorcli.cli.batch import Batch
    from tumorcli.io.atomic import atomic_file

    def work(name: str) -> None:
        with atomic_file(tmp_path / f"{name}-seg.nii.gz") as temporary:
            temporary.write_bytes(b"half a volume")
            os.kill(os.getpid(), signal.SIGTERM)  # scancel, or the time limit, right now
            time.sleep(5)

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        list(Batch("segment", tmp_path / "logs").each(["S1", "S2"], work, name=str))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    assert "interrupted by SIGTERM" in (tmp_path / "logs" / "S1.log").read_text()
    assert not (tmp_path / "logs" / "S2.log").exists()
    assert signal.getsignal(signal.SIGTERM) == handler
