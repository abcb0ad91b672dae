"""SIGTERM / SIGUSR1 during `tumor train`: the run writes a checkpoint after the next optimiser
step, exits 0 with "checkpointed at step N; rerun with --resume", and --resume continues at
step N with the same batches (train/preempt.py)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tumorcli.nets.segmentation import SegNetConfig
from tumorcli.train.preempt import EXIT_STOPPED, stop_on_signals
from tumorcli.train.segment import SegTrainConfig, train_segmentation

CPU = torch.device("cpu")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TUMOR_DEBUG": "1"}
TINY_SEGMENT = ["--channels", "4,8", "--patch", "16,16,16", "--steps-per-epoch", "2",
                "--warmup", "1", "--val-cases", "0", "--test-cases", "-1"]
TINY_POST = ["--ae-channels", "16,16,16", "--unet-channels", "16,32,32", "--batch-size", "4",
             "--checkpoint-every", "2", "--warmup", "1", "--lr", "1e-2", "--ema-decay", "0"]


def quiet(text: str) -> None:
    pass


def signal_after(steps: int, number: int = signal.SIGTERM):
    """An `advance` callback that sends `number` to this process once `steps` steps are done."""
    done = [0]

    def advance(count: int = 1) -> None:
        done[0] += count
        if done[0] == steps:
            os.kill(os.getpid(), number)
    return advance


def test_the_handlers_only_raise_a_flag_and_the_previous_ones_come_back():
    seen = []
    before_term = signal.getsignal(signal.SIGTERM)
    before_usr1 = signal.signal(signal.SIGUSR1, lambda number, frame: seen.append(number))
    try:
        with stop_on_signals() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGTERM)   # the first signal is the one named
            time.sleep(0.01)
            assert stop.requested and stop.signal_name == "SIGUSR1" and seen == []
        assert signal.getsignal(signal.SIGTERM) == before_term
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, before_usr1)


def stopped_and_resumed_like_a_straight_run(train, tmp_path: Path, signal_after_step: int,
                                            total_steps: int) -> dict:
    """Train straight, then again with SIGTERM after `signal_after_step` steps and --resume;
    assert the second ends with the first's weights and log; returns the checkpoint json of
    the stopped run."""
    from safetensors.torch import load_file

    train(tmp_path / "straight")
    stopped = train(tmp_path / "stopped", advance=signal_after(signal_after_step))
    step = signal_after_step + 1   # the signal lands after that step's all-reduce: one more
    assert stopped["stopped"] == (f"stopped by SIGTERM: checkpointed at step {step}; rerun with "
                                  "--resume")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL   # the handler is gone again
    saved = json.loads((tmp_path / "stopped" / "checkpoint.json").read_text())
    assert saved["step"] == step

    resumed = train(tmp_path / "stopped", resume=True)
    assert resumed["step"] == total_steps and "stopped" not in resumed
    straight_weights = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    resumed_weights = load_file(str(tmp_path / "stopped" / "checkpoint.safetensors"))
    for key, value in straight_weights.items():
        assert torch.allclose(value, resumed_weights[key], atol=1e-6), key
    log = lambda name: [(row["epoch"], row["step"], row["train_loss"])
                        for row in csv.DictReader(open(tmp_path / name / "train_log.csv"))]
    assert log("stopped") == log("straight")   # the cut epoch averages the same steps
    return saved


def test_a_segment_run_stopped_mid_epoch_resumes_there_and_ends_as_if_never_stopped(seg_cohort,
                                                                                   tmp_path):
    net = SegNetConfig(channels=(4, 8), patch=(16, 16, 16))
    config = SegTrainConfig(data=str(seg_cohort), epochs=2, steps_per_epoch=3, batch_size=2,
                            warmup_steps=2, val_cases=1, test_cases=-1, seed=5)
    saved = stopped_and_resumed_like_a_straight_run(
        lambda out, **options: train_segmentation(net, config, out, CPU, say=quiet, **options),
        tmp_path, signal_after_step=4, total_steps=6)
    assert saved["epoch"] == 1 and len(saved["unlogged_losses"]) == 2   # steps 4 and 5


def test_a_refine_run_stopped_mid_epoch_resumes_there_and_ends_as_if_never_stopped(seg_cohort,
                                                                                  tmp_path):
    from tumorcli.nets.medsegdiff import MedSegDiffConfig
    from tumorcli.nets.refiner import RefinerSpec
    from tumorcli.train.refine import RefineTrainConfig, train_refiner

    prior = tmp_path / "prior"
    train_segmentation(SegNetConfig(channels=(4, 8), patch=(16, 16, 16)),
                       SegTrainConfig(data=str(seg_cohort), epochs=1, steps_per_epoch=1,
                                      val_cases=0, test_cases=-1), prior, CPU, say=quiet)
    spec = RefinerSpec.make("medsegdiff", MedSegDiffConfig(size=32, channels=(8, 16)),
                            spacing_mm=2.0, modalities=("t1n", "t1c", "t2w", "t2f"), start=300,
                            prior_model=prior.name)
    config = RefineTrainConfig(data=str(seg_cohort), prior=str(prior), epochs=2,
                               steps_per_epoch=3, batch_size=2, val_cases=0, seed=1)
    saved = stopped_and_resumed_like_a_straight_run(
        lambda out, **options: train_refiner(spec, config, out, CPU, say=quiet, **options),
        tmp_path, signal_after_step=3, total_steps=6)
    assert saved["epoch"] == 1 and len(saved["unlogged_losses"]) == 1   # step 4


def wait_for_log_rows(process: subprocess.Popen, log: Path, rows: int = 1,
                      timeout: float = 90) -> None:
    """Block until `log` holds `rows` data rows (the run is training), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) > rows:
            return
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.communicate()}")
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"no {rows} log rows in {timeout} s")


def stop_with(process: subprocess.Popen, number: int) -> tuple[str, str]:
    process.send_signal(number)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_STOPPED == 0, stderr[-2000:]
    return stdout, stderr


def test_sigterm_stops_tumor_train_segment_and_resume_continues_at_that_step(seg_cohort,
                                                                            tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "tumorcli", "train", "segment", "--data", str(seg_cohort),
               "-o", str(out), *TINY_SEGMENT]
    process = subprocess.Popen([*command, "--epochs", "5000", "-q"], env=ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_log_rows(process, out / "train_log.csv")
    _, stderr = stop_with(process, signal.SIGTERM)
    step = int(re.search(r"stopped by SIGTERM: checkpointed at step (\d+); rerun with --resume",
                         stderr)[1])
    assert json.loads((out / "checkpoint.json").read_text())["step"] == step
    epochs = step // 2 + 2
    resumed = subprocess.run([*command, "--epochs", str(epochs), "--resume"], env=ENV,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed at epoch {step // 2} (step {step})" in resumed.stdout
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))
    assert [int(row["step"]) for row in rows] == [2 * epoch for epoch in range(1, epochs + 1)]
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 2 * epochs


@pytest.fixture(scope="module")
def post_cohort(tmp_path_factory) -> Path:
    from seg_factory import write_cohort

    root = write_cohort(tmp_path_factory.mktemp("post_cohort"), patients=4, sessions=2)
    rows = [f"BraTS-GLI-{patient:05d},{session},{'short' if patient % 2 else 'long'}"
            for patient in range(1, 5) for session in ("000", "001")]
    (root / "cohort.csv").write_text("\n".join(["subject,session,survival_class", *rows]) + "\n")
    return root


def test_sigusr1_stops_tumor_train_predict_post_and_resume_continues_at_that_step(post_cohort,
                                                                                 tmp_path):
    out = tmp_path / "post"
    command = [sys.executable, "-m", "tumorcli", "train", "predict-post", "--data",
               str(post_cohort), "-o", str(out), *TINY_POST]
    process = subprocess.Popen([*command, "--autoencoder-steps", "5000", "--denoiser-steps", "2",
                                "-q"], env=ENV, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    wait_for_log_rows(process, out / "train_log.csv")
    _, stderr = stop_with(process, signal.SIGUSR1)
    step = int(re.search(r"stopped by SIGUSR1: checkpointed at autoencoder step (\d+); rerun "
                         r"with --resume", stderr)[1])
    saved = json.loads((out / "checkpoint.json").read_text())
    assert (saved["stage"], saved["step"]) == ("autoencoder", step)
    logged = [int(row["step"]) for row in csv.DictReader(open(out / "train_log.csv"))]
    assert logged == list(range(2, step + 1, 2))   # rows every 2 steps up to the stop

    total = step + 3   # a row at each multiple of 2 after the stop, and one at the last step
    resumed = subprocess.run([*command, "--autoencoder-steps", str(total), "--denoiser-steps",
                              "2", "--resume", "--json"], env=ENV, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["stage"] == "done"
    rows = [(row["stage"], int(row["step"])) for row in csv.DictReader(open(out / "train_log.csv"))]
    expected = sorted({*range(2, total + 1, 2), total})
    assert rows == [("autoencoder", s) for s in expected] + [("denoiser", 2)]
