"""A non-editable `pip install .` carries the shipped weights: in a fresh virtual environment,
from a folder that has nothing to do with the repository, every verb finds its default model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seg_factory import write_subject

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "config.json").is_file())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a venv (sharing this interpreter's torch, MONAI, …) with tumorcli installed from
    a copy of the source tree, not in editable mode."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "tests", "benchmarks", "sample_data", "build", "*.egg-info", "__pycache__",
        ".pytest_cache", "demo", "runs"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--no-deps", str(source)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv / "bin"


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TUMOR_MODELS", "PYTHONPATH")}
    return subprocess.run([str(bin_dir / "tumor"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_installed_package_finds_every_shipped_model_from_another_folder(installed,
                                                                             tmp_path):
    result = run(installed, tmp_path, "info", "--json")
    assert result.returncode == 0, result.stderr
    found = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert sorted(found) == SHIPPED
    assert all(m["found_in"] == "installed" and str(ROOT) not in m["path"]
               for m in found.values())


def test_segment_and_predict_post_run_with_their_default_models_after_install(installed,
                                                                             tmp_path):
    case = write_subject(tmp_path / "cohort", "BraTS-GLI-00001-000", seed=3)
    result = run(installed, tmp_path, "segment", "-i", str(case), "-o", "seg.nii.gz", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "seg.nii.gz").is_file()
    if "predict-post" not in SHIPPED:
        pytest.skip("no predict-post weights ship")
    result = run(installed, tmp_path, "predict-post", "--pre",
                 str(case / f"{case.name}-t1c.nii.gz"), "--mask", "seg.nii.gz", "--survival",
                 "short", "-o", "post.nii.gz", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "post.nii.gz").is_file()


@pytest.mark.skipif("growth" not in SHIPPED, reason="no growth weights ship")
def test_predict_growth_runs_with_its_default_model_after_install(installed, tmp_path):
    cases = [write_subject(tmp_path / "cohort", f"BraTS-GLI-00001-{s:03d}", seed=3 + s)
             for s in range(3)]
    result = run(installed, tmp_path, "predict-growth", *map(str, cases), "--days", "0,100,180",
                 "--treatments", "none,surgery+rt+tmz,tmz", "--target-day", "260", "-o",
                 "future", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "future" / "predicted-seg.nii.gz").is_file()
