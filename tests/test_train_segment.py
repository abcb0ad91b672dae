"""`tumor train segment`: the patient split, tumour-biased patches, the schedule, checkpoints that
resume exactly, and a tiny Res U-Net that learns nested spheres from the CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seg_factory import write_cohort
from tumorcli.cli.app import app
from tumorcli.nets.segmentation import (SegNetConfig, build_segnet, labels_from_regions,
                                        regions_from_labels)
from tumorcli.train.data import Case, find_cases, load_case, sample_patches, split_cases
from tumorcli.train.schedule import lr_at
from tumorcli.train.segment import SegTrainConfig, train_segmentation

runner = CliRunner()


@pytest.fixture
def cohort(seg_cohort) -> Path:
    return seg_cohort


def test_regions_nest_and_labels_come_back_exactly():
    labels = torch.tensor([0, 1, 2, 3], dtype=torch.uint8).reshape(1, 1, 4)
    regions = regions_from_labels(labels)   # (3, 1, 1, 4): TC, WT, ET
    assert regions[:, 0, 0].tolist() == [[0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]]
    assert torch.equal(labels_from_regions(regions), labels)


def test_split_is_by_patient_seeded_and_complete():
    cases = [Case(f"BraTS-GLI-{p:05d}-{s:03d}", f"BraTS-GLI-{p:05d}", {}, Path("x"))
             for p in range(10) for s in range(3)]
    split = split_cases(cases, seed=3)
    assert split == split_cases(cases, seed=3) and split != split_cases(cases, seed=4)
    patients = {part: {name[:-4] for name in names} for part, names in split.items()}
    assert not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])
    assert sorted(sum(split.values(), [])) == sorted(c.name for c in cases)
    assert (len(patients["train"]), len(patients["val"]), len(patients["test"])) == (7, 1, 2)


def test_patches_are_biased_to_tumour_and_deterministic(cohort):
    case = load_case(find_cases(cohort)[0], ("t1n", "t1c", "t2w", "t2f"), 2.0)
    images, labels = sample_patches([case], 64, (16, 16, 16), np.random.default_rng(0))
    assert images.shape == (64, 4, 16, 16, 16) and labels.shape == (64, 16, 16, 16)
    with_tumour = float(np.mean([(patch > 0).any() for patch in labels]))
    brain_tumour_fraction = float((case.labels > 0).mean())
    assert with_tumour >= 0.6 > brain_tumour_fraction * 4
    again, _ = sample_patches([case], 64, (16, 16, 16), np.random.default_rng(0))
    assert np.array_equal(images, again)


def test_the_learning_rate_warms_up_then_follows_a_cosine_to_one_percent():
    rates = [lr_at(step, 1000, 1e-3, 100) for step in range(1000)]
    assert rates[0] == pytest.approx(1e-5) and rates[99] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[100:], rates[101:]))
    assert rates[-1] == pytest.approx(1e-5)
    assert rates[550] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 450 / 899))))


def test_a_run_resumed_from_its_checkpoint_ends_with_the_same_weights(cohort, tmp_path):
    net = SegNetConfig(channels=(4, 8), patch=(16, 16, 16))
    settings = dict(data=str(cohort), steps_per_epoch=3, batch_size=2, warmup_steps=2,
                    val_cases=1, test_cases=-1, seed=5)
    cpu = torch.device("cpu")
    train_segmentation(net, SegTrainConfig(epochs=2, **settings), tmp_path / "straight", cpu,
                       say=lambda text: None)
    train_segmentation(net, SegTrainConfig(epochs=1, **settings), tmp_path / "resumed", cpu,
                       say=lambda text: None)
    train_segmentation(net, SegTrainConfig(epochs=2, **settings), tmp_path / "resumed", cpu,
                       resume=True, say=lambda text: None)
    from safetensors.torch import load_file

    straight = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "checkpoint.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "train_log.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    config = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert config["training"]["epochs"] == 2 and config["architecture"] == "resunet"


def test_tiny_resunet_trained_from_the_cli_learns_the_tumour(tiny_segmenter):
    out, summary = tiny_segmenter
    assert summary["test"]["cases"] == 1 and summary["step"] == 80
    assert summary["test"]["regions"]["WT"]["dice"] > 0.8
    assert summary["test"]["regions"]["TC"]["dice"] > 0.6
    for name in ("config.json", "model.safetensors", "card.md", "split.json", "train_log.csv",
                 "test_metrics.csv", "checkpoint.safetensors", "checkpoint.json"):
        assert (out / name).is_file(), name
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    card = (out / "card.md").read_text()
    assert "Held-out test scores" in card and "tumor train segment" in card
    log = list(csv.DictReader(open(out / "train_log.csv")))
    assert float(log[-1]["train_loss"]) < float(log[0]["train_loss"])


def test_a_run_resumed_from_the_cli_cites_both_calls_in_its_card(tiny_segmenter, seg_cohort,
                                                                 tmp_path):
    out = tmp_path / "longer"
    shutil.copytree(tiny_segmenter[0], out)
    result = runner.invoke(app, ["train", "segment", "--data", str(seg_cohort), "-o", str(out),
                                 "--epochs", "3", "--test-cases", "1", "--resume", "-q"])
    assert result.exit_code == 0, result.output
    card = (out / "card.md").read_text()
    assert "--epochs 2 " in card and "then resumed with --epochs 3 --resume" in card
    assert json.loads((out / "config.json").read_text())["training"]["epochs"] == 3


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--model", "swinunetr", "--patch", "48,48,48"], "Swin-UNETR needs multiples of 32"),
    (["--patch", "32,32"], "--patch 32,32: expected 3 positive integers"),
    (["--model", "swinunetr", "--window", "0"], "--window 0: must be at least 1"),
    (["--resume"], "no checkpoint to resume from"),
])
def test_bad_training_options_are_one_line_and_exit_2(cohort, tmp_path, args, message):
    result = runner.invoke(app, ["train", "segment", "--data", str(cohort), "-o",
                                 str(tmp_path / "m"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_output_folder_with_files_needs_resume(cohort, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["train", "segment", "--data", str(cohort), "-o",
                                 str(tmp_path / "m")])
    assert result.exit_code == 2 and "add --resume" in result.output


def test_a_cohort_without_masks_is_bad_input(tmp_path):
    cohort = write_cohort(tmp_path / "c", patients=1)
    for mask in cohort.rglob("*-seg.nii.gz"):
        mask.unlink()
    result = runner.invoke(app, ["train", "segment", "--data", str(cohort), "-o",
                                 str(tmp_path / "m")])
    assert result.exit_code == 2 and "no case folder holds a *-seg.nii.gz" in result.output


def test_swin_unetr_builds_from_its_config_and_maps_4_modalities_to_3_regions():
    net = build_segnet(SegNetConfig(architecture="swinunetr", feature_size=12, patch=(64,) * 3))
    with torch.no_grad():
        out = net(torch.zeros(1, 4, 64, 64, 64))
    assert out.shape == (1, 3, 64, 64, 64)


def test_the_swin_window_is_configurable_and_old_configs_keep_monais_7():
    assert SegNetConfig.from_dict({"architecture": "swinunetr"}).window == 7
    config = SegNetConfig.from_dict({**SegNetConfig(architecture="swinunetr", window=4).to_dict()})
    assert config.window == 4
    windows = {tuple(block.window_size) for block in build_segnet(config).modules()
               if type(block).__name__ == "SwinTransformerBlock"}
    assert windows == {(4, 4, 4)}


def test_torchrun_with_two_ranks_trains_data_parallel(cohort, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", "-m", "tumorcli", "train", "segment", "--data", str(cohort),
         "-o", str(out), "--channels", "4,8", "--patch", "16,16,16", "--epochs", "1",
         "--steps-per-epoch", "3", "--warmup", "1", "--val-cases", "1", "--test-cases", "-1",
         "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TUMOR_DEBUG": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["step"] == 3 and (out / "model.safetensors").is_file()
    assert len(list(csv.DictReader(open(out / "train_log.csv")))) == 1


def test_scanner_augmentation_is_seeded_per_channel_and_keeps_the_background():
    from tumorcli.train.augment import ScannerAugment, augment_channels

    image = np.zeros((2, 24, 24, 24), np.float32)
    image[:, 4:20, 4:20, 4:20] = 0.5               # brain, z-scored; outside is 0
    offsets = np.array([4.0, 4.0], np.float32)
    bias_only = ScannerAugment(bias_p=1.0, bias_coeff=(0.05, 0.1), gamma_p=0, noise_p=0,
                               scale_p=0, shift_p=0)
    out = augment_channels(image, offsets, np.random.default_rng(1), bias_only)
    assert np.array_equal(out, augment_channels(image, offsets, np.random.default_rng(1),
                                                bias_only))
    assert (out[:, :4] == 0).all() and (out[:, 20:] == 0).all()
    inside = out[:, 4:20, 4:20, 4:20]
    # the field multiplies the scanner's signal (z + mean/sd), so a flat 0.5 becomes
    # 4.5 × field − 4: smooth, positive field in (0.5, 3), a different one per modality
    field = (inside + 4.0) / 4.5
    assert field.min() > 0.5 and field.max() < 3 and field.std() > 0.02
    assert not np.allclose(field[0], field[1])
    assert np.abs(np.diff(field, axis=1)).max() < 0.2


def test_fine_tuning_starts_from_the_init_models_network_and_weights(tiny_segmenter, tmp_path,
                                                                     seg_cohort):
    from tumorcli.nets.weights import WEIGHTS, read_config
    from safetensors.torch import load_file

    init, _ = tiny_segmenter
    out = tmp_path / "tuned"
    result = runner.invoke(app, ["train", "segment", "--data", str(seg_cohort), "-o", str(out),
                                 "--init", str(init), "--epochs", "1", "--steps-per-epoch", "1",
                                 "--lr", "1e-12", "--warmup", "0", "--val-cases", "1",
                                 "--test-cases", "-1", "--json"])
    assert result.exit_code == 0, result.output
    config = read_config(out)
    assert config["channels"] == read_config(init)["channels"] == [8, 16, 32]
    assert config["training"]["init"] == str(init) and "--init" in config["training"]["command"]
    assert config["training"]["augment"] == "scanner"
    before, after = load_file(str(init / WEIGHTS)), load_file(str(out / WEIGHTS))
    assert all(torch.allclose(before[k].float(), after[k].float(), atol=1e-3) for k in before)
    missing = runner.invoke(app, ["train", "segment", "--data", str(seg_cohort), "-o",
                                  str(tmp_path / "x"), "--init", str(tmp_path)])
    assert missing.exit_code == 2 and "not a model folder" in missing.output
