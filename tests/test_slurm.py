"""The example SLURM scripts for real: examples/slurm/submit_pipeline.sh on a one-node SLURM
cluster started by ../shared/slurm-local.sh (Debian's slurmctld/slurmd/munge, installed when
missing). Skipped when not root, when the script is missing or the packages cannot be installed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg_factory import write_subject

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SLURM_LOCAL = ROOT.parent / "shared" / "slurm-local.sh"
SUBMIT = ROOT / "examples" / "slurm" / "submit_pipeline.sh"
SUBJECTS = [f"BraTS-GLI-{n:05d}-000" for n in (1, 2, 3)]
FAST = "--atlas none --no-skull-strip --no-n4"  # the factory's scans are already skull-stripped


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory) -> Path:
    """A running one-node cluster (stopped at the end): its slurm.conf."""
    if os.geteuid() != 0:
        pytest.skip("slurm-local.sh starts SLURM's daemons as root")
    if not SLURM_LOCAL.is_file():
        pytest.skip(f"{SLURM_LOCAL} not found")
    folder = tmp_path_factory.mktemp("slurm")
    environment = {**os.environ, "SLURM_LOCAL_LINK_ETC": "0"}  # leave /etc/slurm alone
    started = subprocess.run(["bash", str(SLURM_LOCAL), "start", str(folder)], env=environment,
                             capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        if "could not install" in started.stderr or "must run as root" in started.stderr:
            pytest.skip("no SLURM here: " + started.stderr.strip().splitlines()[-1])
        pytest.fail(f"slurm-local.sh start failed:\n{started.stderr[-3000:]}")
    yield folder / "slurm.conf"
    subprocess.run(["bash", str(SLURM_LOCAL), "stop", str(folder)], env=environment,
                   capture_output=True, text=True, timeout=120)


def slurm(environment: dict, *command: str) -> str:
    return subprocess.run(command, env=environment, capture_output=True, text=True, check=True,
                          timeout=30).stdout


def job_states(environment: dict, job: str) -> list[str]:
    """JobState of every task of a job (an array's tasks, or the job itself)."""
    shown = slurm(environment, "scontrol", "show", "job", job)
    return [word.split("=", 1)[1] for word in shown.split() if word.startswith("JobState=")]


def test_submit_pipeline_runs_three_array_stages_and_a_merge_into_one_volumes_table(
        slurm_conf, tmp_path, record_property):
    cohort, out = tmp_path / "cohort", tmp_path / "out"
    for seed, subject in enumerate(SUBJECTS):
        write_subject(cohort, subject, seed=500 + seed, shape=(32, 32, 24))
    environment = {**os.environ, "SLURM_CONF": str(slurm_conf), "TUMOR_PYTHON": sys.executable,
                   "TUMOR_CPUS": "1", "TUMOR_PREPROCESS_ARGS": FAST}
    began = time.monotonic()
    submitted = subprocess.run(["bash", str(SUBMIT), str(cohort), str(out), "2"],
                               env=environment, cwd=tmp_path, capture_output=True, text=True,
                               timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    jobs = dict(line.split() for line in submitted.stdout.splitlines())
    assert list(jobs) == ["preprocess", "segment", "volumes", "merge"]
    assert slurm(environment, "squeue", "-h", "-j", jobs["merge"]).strip(), \
        "submit_pipeline.sh returns while the jobs are still queued"

    deadline = time.monotonic() + 600
    while slurm(environment, "squeue", "-h", "-j", ",".join(jobs.values())).strip():
        assert time.monotonic() < deadline, slurm(environment, "squeue")
        time.sleep(0.5)
    seconds = time.monotonic() - began
    record_property("pipeline_seconds", round(seconds, 1))
    print(f"\narray pipeline on {len(SUBJECTS)} subjects (2 tasks a stage): {seconds:.1f} s")
    logs = out / "logs" / "slurm"
    for stage, job in jobs.items():
        states = job_states(environment, job)
        assert states == ["COMPLETED"] * (1 if stage == "merge" else 2), (
            stage, states, *(p.read_text() for p in sorted(logs.glob(f"tumor-{stage}-*"))))

    assert sorted(p.name for p in out.iterdir()) == [*SUBJECTS, "logs", "volumes.csv"]
    for subject in SUBJECTS:
        folder = out / subject
        for modality in ("t1n", "t1c", "t2w", "t2f"):
            assert (folder / f"{subject}-{modality}.nii.gz").is_file()
        assert (folder / "preprocess.json").is_file() and (folder / f"{subject}-seg.json").is_file()
        labels = np.asarray(nib.load(folder / f"{subject}-seg.nii.gz").dataobj)
        assert labels.shape == (32, 32, 24) and set(np.unique(labels)) <= {0, 1, 2, 3}
        assert labels.any()
        log = (out / "logs" / f"{subject}.log").read_text()
        assert " preprocess [" in log and " segment [" in log and "job " in log
    with open(out / "volumes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    files = sorted({row["file"] for row in rows})
    assert files == [str(out / s / f"{s}-seg.nii.gz") for s in SUBJECTS]
    assert len(rows) == 3 * 5  # one row per subject and region: NETC, SNFH, ET, TC, WT
    merge_log = next(logs.glob("tumor-merge-*.out")).read_text()
    assert "every subject of" in merge_log
