"""`tumor train growth` and `tumor predict-growth` on a tiny longitudinal cohort: training,
resume, the outputs on the last session's grid and scale, determinism, the zero-change identity,
the harmonisation of sessions, and one red line per bad input.

The tiny model learns nothing useful in a few steps; these tests pin the plumbing. Quality is
measured by benchmarks/growth_quality.py on held-out synthetic patients."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seg_factory import write_cohort
from tumorcli.cli.app import app
from tumorcli.io.volume import load_volume

runner = CliRunner()
TINY = ["--channels", "16,32,32", "--batch-size", "4", "--checkpoint-every", "2", "--warmup",
        "1", "--lr", "1e-2", "--ema-decay", "0"]
DAYS = (0, 100, 180, 260)
TREATMENTS = ("none", "surgery+rt+tmz", "tmz", "none")


@pytest.fixture(scope="module")
def growth_cohort(tmp_path_factory) -> Path:
    root = write_cohort(tmp_path_factory.mktemp("growth_cohort"), patients=3, sessions=4)
    with open(root / "cohort.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["subject", "session", "day", "treatments"])
        for patient in range(1, 4):
            for session, (day, given) in enumerate(zip(DAYS, TREATMENTS)):
                writer.writerow([f"BraTS-GLI-{patient:05d}", f"{session:03d}", day, given])
    return root


@pytest.fixture(scope="module")
def growth_model(growth_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("growth_models") / "tiny-growth"
    result = runner.invoke(app, ["train", "growth", "--data", str(growth_cohort), "-o", str(out),
                                 "--steps", "4", *TINY, "--json"])
    assert result.exit_code == 0, result.output
    return out


def sessions_of(cohort: Path, patient: int = 1) -> list[Path]:
    return [cohort / f"BraTS-GLI-{patient:05d}-{s:03d}" for s in range(3)]


def predict(model: Path, sessions: list[Path], out: Path, *args: str):
    return runner.invoke(app, ["predict-growth", *map(str, sessions), "--days", "0,100,180",
                               "--treatments", "none,surgery+rt+tmz,tmz", "--target-day", "260",
                               "-o", str(out), "--model", str(model), *args])


def test_examples_are_every_three_earlier_sessions_before_each_target():
    from tumorcli.train.growth_data import examples_of

    assert examples_of(4) == [(0, 1, 2, 3)]
    five = examples_of(5)
    assert len(five) == 1 + 4 and all(list(e) == sorted(set(e)) for e in five)


def test_training_writes_fp16_weights_the_change_scale_and_resumes(growth_model,
                                                                   growth_cohort, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(str(growth_model / "growth.safetensors"))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    assert any(k.startswith("class_embedding.mlp") for k in tensors)   # days + treatments
    config = json.loads((growth_model / "config.json").read_text())
    assert config["kind"] == "growth" and config["change_scale"] > 0
    assert config["change_scale"] != 1.0 and "--steps 4" in config["training"]["command"]
    out = tmp_path / "resumed"
    first = runner.invoke(app, ["train", "growth", "--data", str(growth_cohort), "-o", str(out),
                                "--steps", "2", *TINY, "-q"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["train", "growth", "--data", str(growth_cohort), "-o", str(out),
                                "--steps", "4", *TINY, "--resume", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["step"] == 4
    steps = [row["step"] for row in csv.DictReader(open(out / "train_log.csv"))]
    assert steps == ["2", "4"]


def test_prediction_lands_on_the_last_session_grid_with_a_binary_mask(growth_model,
                                                                      growth_cohort, tmp_path):
    sessions = sessions_of(growth_cohort)
    result = predict(growth_model, sessions, tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    last = load_volume(sessions[-1] / f"{sessions[-1].name}-t1c.nii.gz")
    for name in ("predicted-t1n", "predicted-t1c", "predicted-t2f", "predicted-seg",
                 "probability"):
        volume = load_volume(tmp_path / "out" / f"{name}.nii.gz")
        assert volume.shape == last.shape and np.allclose(volume.affine, last.affine)
    mask = np.asarray(load_volume(tmp_path / "out" / "predicted-seg.nii.gz").array)
    assert set(np.unique(mask)) <= {0, 1}
    assert abs(record["predicted_wt_cm3"] - mask.sum() * 8 / 1000) <= 0.005   # 2 decimals
    assert not (tmp_path / "out" / "uncertainty.nii.gz").exists()   # one call: no spread


def test_samples_give_an_uncertainty_map_and_the_seed_repeats(growth_model, growth_cohort,
                                                             tmp_path):
    sessions = sessions_of(growth_cohort)
    runs = [predict(growth_model, sessions, tmp_path / name, "--samples", "2", "--steps", "2",
                    "--seed", seed, "-q") for name, seed in (("a", "1"), ("b", "1"), ("c", "2"))]
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    read = lambda name, file: np.asarray(load_volume(tmp_path / name / file).array)
    assert np.array_equal(read("a", "predicted-t1c.nii.gz"), read("b", "predicted-t1c.nii.gz"))
    assert not np.array_equal(read("a", "predicted-t1c.nii.gz"),
                              read("c", "predicted-t1c.nii.gz"))
    assert read("a", "uncertainty.nii.gz").max() > 0


def test_a_model_that_predicts_no_change_returns_the_last_session_and_mask(growth_model, growth_cohort,
                                                                 monkeypatch):
    from tumorcli.infer.growth_inputs import read_session
    from tumorcli.infer.predict_growth import GrowthPredictor

    predictor = GrowthPredictor.load(growth_model, torch.device("cpu"))
    monkeypatch.setattr(GrowthPredictor, "_denoise", lambda self, noise, sources, *rest: (
        torch.zeros_like(noise), torch.zeros((len(noise), 1, *noise.shape[-2:]))))
    read = [read_session(s) for s in sessions_of(growth_cohort)]
    result = predictor.predict([r[0] for r in read], [r[1] for r in read], [0, 100, 180],
                               ["none", "surgery+rt+tmz", "tmz"], 260, "tmz")
    for modality, volume in result.images.items():
        last = np.asarray(read[-1][0][modality].array)
        assert np.allclose(np.asarray(volume.array), last, atol=1e-4)
    # and no mask change: the last session's own mask (the persistence prior)
    assert predictor.config.mask_prior > 0
    assert np.array_equal(np.asarray(result.mask.array), np.asarray(read[-1][1].array) > 0)


def test_sessions_are_put_in_the_reference_scanner_conditions(growth_cohort):
    from tumorcli.infer.growth_inputs import read_session, stack_sessions
    from tumorcli.io.volume import Volume

    images, mask = read_session(sessions_of(growth_cohort)[0])
    x = np.linspace(0, 1, images["t1c"].shape[0], dtype=np.float32)[:, None, None]
    brighter = {m: Volume(np.asarray(v.array) * 3.0 * (1 + 0.3 * x), v.affine, v.header,
                          source=v.source) for m, v in images.items()}   # gain and a bias
    stack = stack_sessions([brighter, images], [mask, mask], 2.0, reference=-1)
    brain = stack.brain & (stack.masks.max(0) == 0)
    ratio = stack.images[0][:, brain] / np.maximum(stack.images[1][:, brain], 1e-6)
    assert abs(float(np.median(ratio)) - 1) < 0.02 and np.percentile(np.abs(ratio - 1), 90) < 0.1


def test_days_and_treatments_default_to_the_cohort_table(growth_model, growth_cohort, tmp_path):
    result = runner.invoke(app, ["predict-growth", *map(str, sessions_of(growth_cohort)),
                                 "--target-day", "260", "-o", str(tmp_path / "out"),
                                 "--model", str(growth_model), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["days"] == [0, 100, 180] and record["treatments"] == list(TREATMENTS[:3])


def test_two_sessions_repeat_the_earliest_with_a_warning(growth_model, growth_cohort, tmp_path):
    sessions = sessions_of(growth_cohort)[1:]
    result = runner.invoke(app, ["predict-growth", *map(str, sessions), "--days", "100,180",
                                 "--target-day", "260", "-o", str(tmp_path / "out"),
                                 "--model", str(growth_model), "-q"])
    assert result.exit_code == 0, result.output
    assert "earliest is repeated 1×" in result.output
    assert json.loads((tmp_path / "out" / "prediction.json").read_text())["repeated_earliest"] == 1


@pytest.mark.parametrize("args, message", [
    (["--days", "0,100"], "2 days for 3 sessions"),
    (["--days", "0,200,180"], "days must increase"),
    (["--target-day", "150"], "not after the last session"),
    (["--treatments", "none,chemo,tmz"], "unknown treatment 'chemo'"),
    (["--target-treatment", "laser"], "--target-treatment laser"),
    (["--samples", "0"], "need samples ≥ 1"),
    (["--model", "nowhere"], "--model nowhere"),
])
def test_bad_options_are_one_red_line(growth_model, growth_cohort, tmp_path, args, message):
    base = {"--days": "0,100,180", "--target-day": "260", "--model": str(growth_model)}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    result = runner.invoke(app, ["predict-growth", *map(str, sessions_of(growth_cohort)),
                                 "-o", str(tmp_path / "out"),
                                 *[x for pair in base.items() for x in pair]])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_session_on_another_grid_says_to_run_preprocess(growth_model, growth_cohort,
                                                         tmp_path):
    import shutil

    moved = tmp_path / "BraTS-GLI-00001-002"
    shutil.copytree(sessions_of(growth_cohort)[2], moved)
    for path in moved.iterdir():
        image = nib.load(path)
        affine = image.affine.copy()
        affine[:3, 3] += 10
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), path)
    result = predict(growth_model, [*sessions_of(growth_cohort)[:2], moved], tmp_path / "out")
    assert result.exit_code == 2 and "not on the grid of" in result.output, result.output
    assert "tumor preprocess" in result.output and not (tmp_path / "out").exists()


def test_a_session_without_a_mask_says_to_segment_it(growth_model, growth_cohort, tmp_path):
    import shutil

    bare = tmp_path / "BraTS-GLI-00001-002"
    shutil.copytree(sessions_of(growth_cohort)[2], bare)
    (bare / f"{bare.name}-seg.nii.gz").unlink()
    result = predict(growth_model, [*sessions_of(growth_cohort)[:2], bare], tmp_path / "out")
    assert result.exit_code == 2 and "no *-seg mask" in result.output
    assert "tumor segment" in result.output


def test_a_cohort_without_treatments_or_long_series_is_bad_input(growth_cohort, tmp_path):
    short = write_cohort(tmp_path / "short", patients=1, sessions=2)
    (short / "cohort.csv").write_text("subject,session,day,treatments\n"
                                      "BraTS-GLI-00001,000,0,none\nBraTS-GLI-00001,001,90,tmz\n")
    bare = write_cohort(tmp_path / "bare", patients=1, sessions=4)
    (bare / "cohort.csv").write_text("subject,session,day\nBraTS-GLI-00001,000,0\n")
    for root, message in ((short, "no patient has 4 or more sessions"),
                          (bare, "needs the columns")):
        result = runner.invoke(app, ["train", "growth", "--data", str(root), "-o",
                                     str(tmp_path / "m"), *TINY])
        assert result.exit_code == 2 and message in result.output, result.output


def test_torchrun_with_two_ranks_trains_the_growth_model_data_parallel(growth_cohort, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29531", "-m", "tumorcli", "train", "growth", "--data",
         str(growth_cohort), "-o", str(out), "--steps", "2", *TINY, "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TUMOR_DEBUG": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["step"] == 2 and (out / "growth.safetensors").is_file()
    assert [row["step"] for row in csv.DictReader(open(out / "train_log.csv"))] == ["2"]
