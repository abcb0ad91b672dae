"""The CLI spine: help, version, info, the one error path, device and seed conventions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from tumorcli import __version__
from tumorcli.cli.app import app
from tumorcli.errors import BadInput

runner = CliRunner()


def tumor(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the installed console script as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "tumorcli.cli.app", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=120)


def test_help_lists_the_working_verbs_and_the_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("convert", "info"):
        assert verb in result.output
    words = " ".join(result.output.replace("│", " ").split())
    assert "2 bad input" in words and "3 partial batch" in words


def test_version_as_a_real_subprocess():
    result = tumor("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tumor {__version__}"


def test_loading_the_cli_imports_no_heavy_library():
    code = ("import sys, tumorcli.cli.app; "
            "print(','.join(m for m in ('torch','numpy','nibabel','SimpleITK','pydicom',"
            "'highdicom','monai') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == ""


def test_info_json_lists_devices_and_a_model_found_through_tumor_models(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    model = tmp_path / "zoo" / "resunet-tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"architecture": "resunet"}))
    save_file({"conv.weight": torch.zeros(2, 2, dtype=torch.float16)},
              str(model / "weights.safetensors"))
    (model / "card.md").write_text("# resunet-tiny\n")
    (tmp_path / "zoo" / "not-a-model").mkdir()
    monkeypatch.setenv("TUMOR_MODELS", str(tmp_path / "zoo"))

    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tumorcli"] == __version__
    assert report["devices"][0]["name"] == "cpu"
    assert report["cuda"] == torch.cuda.is_available()
    names = {m["name"]: m for m in report["models"]}
    assert set(names) >= {"resunet-tiny"} and "not-a-model" not in names
    assert names["resunet-tiny"]["architecture"] == "resunet"
    assert names["resunet-tiny"]["card"] is True
    assert names["resunet-tiny"]["found_in"] == "$TUMOR_MODELS"


def test_info_for_humans_names_cuda_and_the_model_search_path():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0
    assert "CUDA:" in result.output and "Model search path" in result.output


def _nifti(path, affine=None):
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([-1.0, -1.0, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(values, affine), path)
    return values


def test_convert_nifti_to_ras_keeps_each_voxel_at_its_world_position(tmp_path):
    values = _nifti(tmp_path / "lpi.nii")
    result = runner.invoke(app, ["convert", "-i", str(tmp_path / "lpi.nii"), "-o",
                                 str(tmp_path / "ras.nii.gz"), "--orient", "RAS", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["orientation"] == "RAS" and report["shape"] == [4, 5, 6]
    ras = nib.load(tmp_path / "ras.nii.gz")
    assert np.array_equal(np.asanyarray(ras.dataobj), values[::-1, ::-1, :])
    assert np.allclose(ras.affine @ [0, 0, 0, 1], np.diag([-1.0, -1.0, 2.0, 1.0]) @ [3, 4, 0, 1])


def test_an_unknown_orientation_is_bad_input(tmp_path):
    _nifti(tmp_path / "a.nii")
    result = runner.invoke(app, ["convert", "-i", str(tmp_path / "a.nii"), "-o",
                                 str(tmp_path / "b.nii"), "--orient", "RRS"])
    assert result.exit_code == 2
    assert "--orient RRS" in result.output
    assert not (tmp_path / "b.nii").exists()


def test_an_unexpected_error_is_one_line_with_a_log_and_exit_1(tmp_path, monkeypatch):
    import tumorcli.io.volume

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    _nifti(tmp_path / "a.nii")
    monkeypatch.setattr(tumorcli.io.volume, "save_volume", broken)
    monkeypatch.setenv("TUMOR_LOG_DIR", str(tmp_path / "logs"))
    result = runner.invoke(app, ["convert", "-i", str(tmp_path / "a.nii"), "-o",
                                 str(tmp_path / "b.nii")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unexpected RuntimeError: simulated bug" in lines[0]
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback_of_a_bad_input(tmp_path):
    result = tumor("--debug", "convert", "-i", str(tmp_path / "missing.nii.gz"),
                   "-o", str(tmp_path / "out.nii.gz"))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "missing.nii.gz: not found" in result.stderr


def test_usage_errors_exit_2_with_click_usage():
    result = tumor("convert", "-i", "x.nii")
    assert result.returncode == 2
    assert "Missing option" in result.stderr and "Traceback" not in result.stderr


def test_auto_device_is_cpu_here_and_cuda_without_a_gpu_is_bad_input():
    import torch

    from tumorcli.runtime import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto").type == "cpu"
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(BadInput, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(BadInput, match="not a device"):
        resolve_device("gpu")


def test_the_same_seed_gives_the_same_random_numbers():
    import torch

    from tumorcli.runtime import seed_everything

    seed_everything(11)
    first = (torch.rand(5), np.random.rand(5))
    seed_everything(11)
    second = (torch.rand(5), np.random.rand(5))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
