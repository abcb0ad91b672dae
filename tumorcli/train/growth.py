"""`tumor train growth`: the TaDiff-style denoiser (nets/growth.py) on (three sources → target)
examples of each training patient. Loss: the tumour-weighted MSE of the diffusion target (v or
ε) of the change target − last source, plus dice_weight × (soft Dice + BCE) of the future
whole-tumour mask; slices with tumour drawn `tumour_slices` of the time; left–right flips; EMA
weights ship. Checkpoints every `checkpoint_every` steps (--resume); data-parallel under
torchrun; SIGTERM/SIGUSR1 checkpoint and stop (train/loop.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tumorcli.nets.growth import (SOURCES, WEIGHTS, GrowthConfig, build_growth_net,
                                  condition_vector, mask_logits)
from tumorcli.nets.weights import save_weights, write_config
from tumorcli.samplers.schedule import NoiseSchedule
from tumorcli.train import distributed, preempt
from tumorcli.train.checkpoint import load_checkpoint, read_state
from tumorcli.train.ema import EMA
from tumorcli.train.growth_data import SeriesSlices, examples_of, find_series, load_series
from tumorcli.train.loop import Steps, autocast, run_steps
from tumorcli.train.losses import slice_odds, soft_dice_loss, weighted_mse

LOG = "train_log.csv"
LOG_COLUMNS = ("stage", "step", "lr", "train_loss")


@dataclass(frozen=True)
class GrowthTrainConfig:
    data: str
    steps: int = 4000
    batch_size: int = 8
    lr: float = 2e-4
    warmup_steps: int = 100
    tumour_weight: float = 4.0
    dice_weight: float = 1.0
    tumour_slices: float = 0.7
    flip: bool = True
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    seed: int = 0
    command: str = ""


@dataclass
class Examples:
    """Every (patient, example, slice) the sampler draws from, and the tensors behind them."""

    series: list[SeriesSlices]
    items: np.ndarray        # (N, 3): series index, example index, slice index
    examples: list[list[tuple[int, ...]]]
    conditions: list[torch.Tensor]   # per series: (E, CONDITION_SIZE)


def build_examples(series: list[SeriesSlices]) -> Examples:
    from tumorcli.errors import BadInput

    sizes = {patient.images.shape[-2:] for patient in series}
    if len(sizes) > 1:
        raise BadInput(f"the training patients' slices differ in size ({sorted(sizes)})",
                       "put the cohort on one grid first: tumor preprocess (atlas space)")
    items, examples, conditions = [], [], []
    for index, patient in enumerate(series):
        tuples = examples_of(len(patient.days))
        examples.append(tuples)
        conditions.append(torch.stack([condition_vector(
            [patient.days[s] for s in e[:SOURCES]], [patient.treatments[s] for s in e[:SOURCES]],
            patient.days[e[-1]], patient.treatments[e[-1]]) for e in tuples]))
        for e in range(len(tuples)):
            items += [(index, e, k) for k in range(patient.images.shape[1])]
    return Examples(series, np.array(items), examples, conditions)


def tumour_present(data: Examples) -> torch.Tensor:
    """(N, 1, 1, 1): whether the item's last source or target slice holds tumour."""
    flags = []
    for index, e, k in data.items:
        tuple_ = data.examples[index][e]
        masks = data.series[index].masks
        flags.append(float(masks[tuple_[SOURCES - 1], k].max() > 0 or masks[tuple_[-1], k].max() > 0))
    return torch.tensor(flags).view(-1, 1, 1, 1)


def example_batch(data: Examples, picks: np.ndarray, flips: np.ndarray
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sources (B, 12, H, W), change (B, 3, H, W), target mask (B, 1, H, W), condition (B, F))
    for the picked items (flipped left–right where `flips`); the change is target − last
    source, in model units."""
    sources, change, masks, conditions = [], [], [], []
    for (index, e, k), flip in zip(data.items[picks], flips):
        patient, tuple_ = data.series[index], data.examples[index][e]
        parts = [np.concatenate([patient.images[s, k], patient.masks[s, k]]) for s in tuple_[:-1]]
        stacked = np.concatenate(parts).astype(np.float32)
        target = patient.images[tuple_[-1], k].astype(np.float32)
        last = patient.images[tuple_[SOURCES - 1], k].astype(np.float32)
        mask = patient.masks[tuple_[-1], k].astype(np.float32)
        if flip:
            stacked, target, last, mask = (a[:, ::-1] for a in (stacked, target, last, mask))
        sources.append(stacked)
        change.append(target - last)
        masks.append(mask)
        conditions.append(data.conditions[index][e])
    as_tensor = lambda arrays: torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))
    return as_tensor(sources), as_tensor(change), as_tensor(masks), torch.stack(conditions)


def train_growth_model(model: GrowthConfig, config: GrowthTrainConfig, out: Path,
                       device: torch.device, resume: bool = False,
                       advance: Callable[..., None] = lambda steps=1: None,
                       say: Callable[[str], None] = print) -> dict:
    """Train into `out`; the summary (loss, change scale, seconds) or, when stopped by a
    signal, the summary with "stopped"."""
    from tumorcli.nets.weights import read_config
    from tumorcli.runtime import seed_everything
    from tumorcli.train.data import read_split, split_cases, write_split

    rank, world, device = distributed.setup(device)
    say = distributed.on_rank_zero(say)
    out.mkdir(parents=True, exist_ok=True)
    series = {s.name: s for s in find_series(Path(config.data))}
    split = read_split(out) if resume else split_cases(list(series.values()), config.seed)
    if resume:
        model = GrowthConfig.from_dict(read_config(out))
    say(f"{len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test "
        "patients")
    data = build_examples([load_series(series[name], model.spacing_mm, model.pad_multiple)
                           for name in split["train"]])
    if not resume:
        model = with_change_scale(model, data)
        if rank == 0:
            write_split(out, split, Path(config.data), config.seed)
    if rank == 0:
        write_config(out, {**model.to_dict(), "training": asdict(config)})
    seed_everything(config.seed)
    began = time.perf_counter()
    net = build_growth_net(model).to(device)
    ema = EMA(net, config.ema_decay)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr)
    state = {"stage": "growth", "step": 0}
    if resume:
        state = load_checkpoint(out, net, optimizer, {"ema": ema.net}) if read_state(out).get(
            "step") else read_state(out)
    advance(state["step"])
    schedule = NoiseSchedule.make(model.schedule, model.train_steps)
    odds = slice_odds(torch.zeros(len(data.items)), tumour_present(data), False,
                      config.tumour_slices)
    shape = data.series[0].images.shape[-2:]
    draw = lambda rng: (rng.choice(len(odds), size=1, p=odds),
                        rng.random(1) < 0.5 if config.flip else np.zeros(1, bool),
                        rng.integers(model.train_steps, size=1),
                        rng.standard_normal((1, 3, *shape), dtype=np.float32))
    wrapped = distributed.wrap(net, device)

    def loss_at(step: int) -> torch.Tensor:
        pick, flips, t, noise = distributed.draw_batch_slice(draw, (config.seed, 3, step),
                                                             config.batch_size)
        sources, change, mask, condition = (x.to(device) for x in example_batch(data, pick,
                                                                                flips))
        t, noise = torch.from_numpy(t).to(device), torch.from_numpy(noise).to(device)
        clean = change * model.change_scale
        noisy = schedule.add_noise(clean, noise, t)
        target = (schedule.velocity(clean, noise, t) if model.prediction == "v_prediction"
                  else noise)
        with autocast(device):
            output = wrapped(torch.cat([noisy, sources], 1), t, class_labels=condition).float()
        last_mask = sources[:, 4 * SOURCES - 1:4 * SOURCES]
        near = torch.maximum(mask, last_mask)
        logits = mask_logits(output[:, 3:], last_mask, model.mask_prior)
        segmentation = soft_dice_loss(logits, mask) + torch.nn.functional.\
            binary_cross_entropy_with_logits(logits, mask)
        return weighted_mse(output[:, :3], target, near, config.tumour_weight) \
            + config.dice_weight * segmentation

    steps = Steps("growth", config.steps, config.lr, config.warmup_steps,
                  config.checkpoint_every, out / LOG, LOG_COLUMNS)
    with preempt.stop_on_signals() as stop:
        stopped = run_steps(net, ema, optimizer, state, steps, loss_at, out, device, advance,
                            say, stop)
    if stopped:
        return stopped
    if rank == 0:
        save_weights(ema.net, out / WEIGHTS)
    distributed.finish()
    state["stage"] = "done"
    return {"output": str(out), "rank": rank, "change_scale": model.change_scale, **state,
            "examples": int(sum(len(e) for e in data.examples)),
            "seconds": round(time.perf_counter() - began, 1)}


def with_change_scale(model: GrowthConfig, data: Examples, count: int = 2000) -> GrowthConfig:
    """`model` with change_scale = 1 / sd of the change (target − last source) over up to
    `count` random training slices, so the diffused target has about unit sd."""
    rng = np.random.default_rng(0)
    picks = rng.choice(len(data.items), size=min(count, len(data.items)), replace=False)
    _, change, _, _ = example_batch(data, picks, np.zeros(len(picks), bool))
    sd = float(change.std())
    return replace(model, change_scale=1.0 / sd if sd > 0 else 1.0)
