"""`tumor train segment`: the segmentation training loop, on one screen.

data (seeded patient split, tumour-biased patches) -> net -> Dice + BCE over the TC/WT/ET
regions -> AdamW (warm-up + cosine, a pure function of the step) -> every epoch: validation
Dice on whole val cases, CSV log row, best weights (fp16 safetensors) and a resumable checkpoint.
At the end the small-region post-processing is chosen on the val cases (train/postprocess.py),
then the best weights are scored on the held-out test cases through the same inference path
`tumor segment` uses, and the numbers go into card.md.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tumorcli.nets.segmentation import SegNetConfig, build_segnet, parameter_count, regions_from_labels
from tumorcli.train import distributed, preempt
from tumorcli.train.checkpoint import close_epoch, load_checkpoint, unlogged_losses
from tumorcli.train.data import (find_cases, load_case, read_split, sample_patches, split_cases,
                                 write_split)
from tumorcli.train.schedule import set_lr

LOG = "train_log.csv"
LOG_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_dice_tc", "val_dice_wt", "val_dice_et",
               "val_dice_mean", "seconds")


@dataclass(frozen=True)
class SegTrainConfig:
    data: str
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 2
    lr: float = 1e-4                 # AdamW, as in the study
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    val_cases: int = 8               # whole cases scored each epoch
    test_cases: int = 0              # 0 = every test case at the end; -1 = none
    amp: bool | None = None          # None: on for CUDA (bf16, or fp16 with a grad scaler)
    seed: int = 0
    command: str = ""
    augment: str = "basic"           # "scanner": per-modality bias/gamma/noise (train/augment.py)
    init: str = ""                   # a model folder whose weights start the run (fine-tuning)


def train_segmentation(net_config: SegNetConfig, config: SegTrainConfig, out: Path,
                       device: torch.device, resume: bool = False,
                       advance: Callable[..., None] = lambda steps=1: None,
                       say: Callable[[str], None] = print) -> dict:
    """Train, validate, checkpoint into `out`; returns the summary (best val Dice, test scores),
    or, when SIGTERM/SIGUSR1 stopped the run, the summary with "stopped" (train/preempt.py)."""
    from monai.losses import DiceLoss

    from tumorcli.nets.weights import read_config, write_config
    from tumorcli.runtime import seed_everything

    rank, world, device = distributed.setup(device)
    say = distributed.on_rank_zero(say)
    out.mkdir(parents=True, exist_ok=True)
    cases = {case.name: case for case in find_cases(Path(config.data))}
    if resume:
        split = read_split(out)
        if rank == 0:   # the net stays as written; "training" records this call (epochs may grow)
            write_config(out, {**read_config(out), "training": asdict(config)})
    else:
        split = split_cases(list(cases.values()), config.seed)
        if rank == 0:
            write_split(out, split, Path(config.data), config.seed)
            write_config(out, {**net_config.to_dict(), "training": asdict(config)})
    say(f"{len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test cases")
    train = [load_case(cases[n], net_config.modalities, net_config.spacing_mm)
             for n in split["train"]]
    val = [load_case(cases[n], net_config.modalities, net_config.spacing_mm)
           for n in split["val"][:config.val_cases]] if rank == 0 else []

    seed_everything(config.seed)
    net = build_segnet(net_config).to(device)
    if config.init and not resume:
        from tumorcli.nets.weights import WEIGHTS, load_weights

        load_weights(net, Path(config.init) / WEIGHTS)
        say(f"starting from the weights of {config.init}")
    scanner = None
    if config.augment == "scanner":
        from tumorcli.train.augment import ScannerAugment

        scanner = ScannerAugment()
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"step": 0, "epoch": 0, "best_val_dice": -1.0, "best_epoch": 0}
    if resume:
        state = load_checkpoint(out, net, optimizer)
        say(f"resumed at epoch {state['epoch']} (step {state['step']})")
    losses = unlogged_losses(state)   # of the epoch a stop signal cut short
    model = distributed.wrap(net, device)
    dice_loss = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    bce_loss = torch.nn.BCEWithLogitsLoss()
    use_amp = device.type == "cuda" if config.amp is None else config.amp
    half = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and half == torch.float16)
    total_steps = config.epochs * config.steps_per_epoch
    advance(state["step"])
    began = time.perf_counter()

    with preempt.stop_on_signals() as stop:
        for step in range(state["step"], total_steps):
            set_lr(optimizer, step, total_steps, config.lr, config.warmup_steps)
            images, labels = global_batch_slice(train, config, net_config.patch, step, rank,
                                                scanner)
            images = torch.from_numpy(images).to(device)               # (B, 4, *patch)
            targets = regions_from_labels(torch.from_numpy(labels).to(device))  # (B, 3, *patch)
            with torch.autocast(device.type, half, enabled=use_amp):
                logits = model(images)
            loss = dice_loss(logits.float(), targets) + bce_loss(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_value, stop_now = distributed.mean_and_any(float(loss.detach()), stop.requested,
                                                            device)
            losses.append(loss_value)   # the global batch's loss: the mean over ranks
            advance()

            if (step + 1) % config.steps_per_epoch == 0:
                epoch = (step + 1) // config.steps_per_epoch
                if rank == 0:
                    scores = validate(net, net_config, val, device)
                    mean = float(np.mean(scores)) if scores else float("nan")
                    row = [epoch, step + 1, optimizer.param_groups[0]["lr"],
                           float(np.mean(losses)), *scores, mean,
                           round(time.perf_counter() - began, 1)]
                    close_epoch(out, LOG_COLUMNS, row, net, optimizer, state, step + 1, epoch,
                                mean)
                    say(f"epoch {epoch}: loss {np.mean(losses):.4f}, val Dice TC/WT/ET "
                        f"{'/'.join(f'{s:.3f}' for s in scores)} (best "
                        f"{state['best_val_dice']:.3f} at epoch {state['best_epoch']})")
                losses = []
                distributed.barrier()
            if stop_now:   # every rank saw the same flag at this step
                return preempt.checkpoint_and_stop(stop, out, net, optimizer, state, step + 1,
                                                   losses)

    summary = {"output": str(out), "rank": rank, "parameters": parameter_count(net), **state,
               "seconds": round(time.perf_counter() - began, 1)}
    if rank == 0 and split["val"]:   # small-region rule chosen on every val session
        from tumorcli.train.postprocess import (tune_small_regions, val_sessions,
                                                write_postprocess)

        tuned = tune_small_regions(out, [cases[n] for n in split["val"]], device,
                                   val_sessions(len(split["val"])))
        write_postprocess(out, tuned)
        summary["postprocess"] = tuned.to_dict()
        say(f"post-processing: {tuned.rule.describe()} (val mean Dice "
            f"{np.mean(tuned.dice_before):.3f} → {np.mean(tuned.dice_after):.3f})")
    if rank == 0 and config.test_cases >= 0:
        from tumorcli.train.card import score_test_cases, write_segmentation_card

        names = split["test"][:config.test_cases or None]
        summary["test"] = score_test_cases(out, [cases[n] for n in names], device)
        write_segmentation_card(out, net_config, config, summary, split)
    distributed.finish()
    return summary


def global_batch_slice(cases: list, config: SegTrainConfig, patch, step: int, rank: int,
                       scanner=None) -> tuple[np.ndarray, np.ndarray]:
    """This rank's part of step `step`'s global batch: patch i of the global batch is drawn
    from its own stream (seed, step, i), so N ranks of batch B see exactly the patches one
    process of batch N·B sees, and a resumed run sees the same batches."""
    first = rank * config.batch_size
    drawn = [sample_patches(cases, 1, patch, np.random.default_rng([config.seed, step, first + i]),
                            scanner=scanner) for i in range(config.batch_size)]
    return np.concatenate([d[0] for d in drawn]), np.concatenate([d[1] for d in drawn])


@torch.no_grad()
def validate(net: torch.nn.Module, net_config: SegNetConfig, cases: list, device) -> list[float]:
    """Mean Dice of TC, WT, ET over whole `cases` (sliding window on the net grid)."""
    from tumorcli.infer.segment import Segmenter

    if not cases:
        return []
    was_training = net.training
    segmenter = Segmenter(net, net_config, device, overlap=0.25)  # enough to rank epochs
    dice = []
    for case in cases:
        probabilities = segmenter.probabilities(case.image.astype(np.float32))
        truth = regions_from_labels(torch.from_numpy(case.labels)).bool()  # (3, X, Y, Z)
        dice.append(region_dice(probabilities >= 0.5, truth))
    net.train(was_training)
    return [float(v) for v in torch.stack(dice).mean(0)]


def region_dice(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(R, ...) boolean masks -> (R,) Dice per region (1 where both are empty)."""
    both = (predicted & truth).flatten(1).sum(1).float()
    sizes = predicted.flatten(1).sum(1).float() + truth.flatten(1).sum(1).float()
    return torch.where(sizes > 0, 2 * both / sizes.clamp(min=1), 1.0)
