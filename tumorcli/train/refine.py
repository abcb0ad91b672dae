"""`tumor train refine`: the diffusion refiners' training loop, on one screen.

Priors: the segmentation model (`--prior`) runs once over every case and its class
probabilities are cached (priors/). The refiner learns on the prior model's own train split
(its val/test patients stay unseen), with the prior dropped (zeroed) with p = prior_dropout so
the same net also runs unconditionally. 70 % of the timesteps are drawn from [0, t′], the range
conditional refinement samples in, the rest from [0, T) for the unconditional mode.
- MedSegDiff (2D, ε): axial slices biased to tumour; loss ε-MSE + γ·DiceCE on the x0 estimate.
- 3D DDPM refiner (x0 logits): patches biased to tumour; loss DiceCE + λ·Σ w‖softmax − Y0‖² with
  w = 3 on class edges, 1 elsewhere.
Every epoch the val cases are refined through the inference path (`Refiner.refine`) and scored;
the best epoch's weights are kept (fp16 safetensors) next to a resumable checkpoint. At the end
the refined labels' small-region rule is chosen on every val session (train/postprocess.py).
Under torchrun each rank trains on its slice of the global batch (train/distributed.py); SIGTERM
or SIGUSR1 checkpoints at the next step and stops (train/preempt.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tumorcli.nets.refiner import RefinerSpec, fit_planes
from tumorcli.nets.segmentation import classes_from_labels
from tumorcli.samplers.schedule import NoiseSchedule
from tumorcli.train import distributed, preempt
from tumorcli.train.checkpoint import close_epoch, load_checkpoint, unlogged_losses
from tumorcli.train.priors import PRIORS
from tumorcli.train.schedule import set_lr

LOG_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_dice_prior", "val_dice_refined", "seconds")
LOGIT_SCALE = 4.0   # MedSegDiff's x0 estimate in [−1, 1] × this = logits for DiceCE


@dataclass(frozen=True)
class RefineTrainConfig:
    data: str
    prior: str
    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    prior_dropout: float = 0.1
    low_noise_share: float = 0.7     # share of timesteps drawn from [0, t′] (refinement's range)
    dice_weight: float = 10.0        # MedSegDiff: γ
    edge_weight: float = 0.1         # 3D refiner: λ
    val_cases: int = 2
    val_steps: int = 10
    amp: bool | None = None
    seed: int = 0
    command: str = ""


def train_refiner(spec: RefinerSpec, config: RefineTrainConfig, out: Path, device: torch.device,
                  resume: bool = False, advance: Callable[..., None] = lambda steps=1: None,
                  say: Callable[[str], None] = print) -> dict:
    """Train, validate, checkpoint into `out`; returns the summary (best val Dice), or, when
    SIGTERM/SIGUSR1 stopped the run, the summary with "stopped" (train/preempt.py)."""
    from tumorcli.infer.segment import Segmenter
    from tumorcli.nets.weights import write_config
    from tumorcli.runtime import seed_everything
    from tumorcli.train.data import find_cases, read_split, split_cases, write_split
    from tumorcli.train.priors import load_refine_case

    rank, world, device = distributed.setup(device)
    say = distributed.on_rank_zero(say)
    out.mkdir(parents=True, exist_ok=True)
    prior_folder = Path(config.prior)
    cases = {case.name: case for case in find_cases(Path(config.data))}
    if resume:
        split = read_split(out)
    else:
        split = _prior_split(prior_folder, cases) or split_cases(list(cases.values()), config.seed)
        if rank == 0:
            write_split(out, split, Path(config.data), config.seed)
            write_config(out, {**spec.to_dict(), "training": asdict(config)})
    say(f"{len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test cases"
        f"; priors from {prior_folder}")
    segmenter = Segmenter.load(prior_folder, device, overlap=0.5)
    load = lambda names: [load_refine_case(cases[n], segmenter, out / PRIORS) for n in names]
    val = load(split["val"][:config.val_cases]) if rank == 0 else []
    train = load(split["train"]) if rank == 0 else []
    distributed.barrier()   # rank 0 has cached every prior; the other ranks read them
    if rank:
        train = load(split["train"])
    batches, sources = (slice_batch, train) if spec.is_2d else \
        (patch_batch, with_prior_channels(train))
    draw = lambda rng: training_example(batches, sources, spec, config, rng)

    seed_everything(config.seed)
    net = spec.build().to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"step": 0, "epoch": 0, "best_val_dice": -1.0, "best_epoch": 0}
    if resume:
        state = load_checkpoint(out, net, optimizer)
        say(f"resumed at epoch {state['epoch']} (step {state['step']})")
    losses = unlogged_losses(state)   # of the epoch a stop signal cut short
    model = distributed.wrap(net, device)
    schedule = NoiseSchedule.make(spec.schedule, spec.train_steps)
    use_amp = device.type == "cuda" if config.amp is None else config.amp
    total_steps = config.epochs * config.steps_per_epoch
    advance(state["step"])
    began = time.perf_counter()
    with preempt.stop_on_signals() as stop:
        for step in range(state["step"], total_steps):
            set_lr(optimizer, step, total_steps, config.lr, config.warmup_steps)
            image, prior, x0, t, noise = (torch.from_numpy(v) for v in
                                          distributed.draw_batch_slice(draw, (config.seed, step),
                                                                       config.batch_size))
            noisy = schedule.add_noise(x0, noise, t)
            condition = torch.cat([image, prior], 1)
            x0, noise, noisy, t, condition = (v.to(device)
                                              for v in (x0, noise, noisy, t, condition))
            with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                raw = spec.run(model, noisy, t, condition)
            loss = refiner_loss(spec, config, schedule, raw.float(), x0, noise, noisy, t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value, stop_now = distributed.mean_and_any(float(loss.detach()), stop.requested,
                                                            device)
            losses.append(loss_value)   # the global batch's loss: the mean over ranks
            advance()
            if (step + 1) % config.steps_per_epoch == 0:
                epoch = (step + 1) // config.steps_per_epoch
                if rank == 0:
                    prior_dice, refined_dice = validate(net, spec, val, device, config)
                    row = [epoch, step + 1, optimizer.param_groups[0]["lr"],
                           float(np.mean(losses)), prior_dice, refined_dice,
                           round(time.perf_counter() - began, 1)]
                    close_epoch(out, LOG_COLUMNS, row, net, optimizer, state, step + 1, epoch,
                                refined_dice)
                    say(f"epoch {epoch}: loss {np.mean(losses):.4f}, val mean Dice prior "
                        f"{prior_dice:.3f} → refined {refined_dice:.3f} (best "
                        f"{state['best_val_dice']:.3f} at epoch {state['best_epoch']})")
                losses = []
                distributed.barrier()
            if stop_now:   # every rank saw the same flag at this step
                return preempt.checkpoint_and_stop(stop, out, net, optimizer, state, step + 1,
                                                   losses)
    summary = {"output": str(out), "rank": rank, **state,
               "seconds": round(time.perf_counter() - began, 1)}
    if rank == 0 and split["val"]:   # the refined labels' own small-region rule, every val session
        from tumorcli.train.postprocess import tune_small_regions, val_sessions, write_postprocess

        tuned = tune_small_regions(out, [cases[n] for n in split["val"]], device,
                                   val_sessions(len(split["val"])), prior=prior_folder)
        write_postprocess(out, tuned)
        summary["postprocess"] = tuned.to_dict()
        say(f"post-processing: {tuned.rule.describe()} (val mean Dice refined "
            f"{np.mean(tuned.dice_before):.3f} → {np.mean(tuned.dice_after):.3f})")
    distributed.finish()
    return summary


def training_example(batches, sources, spec: RefinerSpec, config: RefineTrainConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One example of a global batch, all from `rng`: image (1, 4, ...), prior (1, 4, ...; zeroed
    with p = prior_dropout), one-hot labels x0 in {−1, 1} (1, 4, ...), timestep t (1,) (from
    [0, t′] with p = low_noise_share, else [0, T)) and the noise ε (1, 4, ...)."""
    image, prior, labels = batches(sources, 1, spec, rng)
    if rng.random() < config.prior_dropout:
        prior[:] = 0                                                       # unconditional
    x0 = (2 * classes_from_labels(torch.from_numpy(labels)) - 1).numpy()
    high = spec.start + 1 if rng.random() < config.low_noise_share else spec.train_steps
    t = rng.integers(0, high, 1)                      # most steps where refining starts
    return image, prior, x0, t, rng.standard_normal(x0.shape, dtype=np.float32)


def refiner_loss(spec, config, schedule, raw, x0, noise, noisy, t) -> torch.Tensor:
    from monai.losses import DiceCELoss

    target = (x0 + 1) / 2                                                  # one-hot
    dice_ce = DiceCELoss(softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    if spec.prediction == "epsilon":   # MedSegDiff
        x0_hat, _ = schedule.predicted_x0_and_eps(raw, noisy, t, "epsilon")
        logits = LOGIT_SCALE * x0_hat.clamp(-1, 1)
        return torch.nn.functional.mse_loss(raw, noise) + config.dice_weight * dice_ce(logits, target)
    edges = class_edges(target)
    weight = 1 + 2 * edges                                                 # 3 on edges, 1 elsewhere
    squared = (weight * (torch.softmax(raw, 1) - target) ** 2).sum(1).mean()
    return dice_ce(raw, target) + config.edge_weight * squared


def class_edges(one_hot_labels: torch.Tensor) -> torch.Tensor:
    """(B, K, ...) one-hot -> (B, 1, ...) 1 where a face or corner neighbour has another label."""
    pool = torch.nn.functional.max_pool3d if one_hot_labels.ndim == 5 else \
        torch.nn.functional.max_pool2d
    present = pool(one_hot_labels, 3, stride=1, padding=1)    # labels seen around each voxel
    return (present.sum(1, keepdim=True) > 1).float()


def slice_batch(cases, batch: int, spec: RefinerSpec, rng: np.random.Generator):
    """MedSegDiff batch: images (B, 4, S, S), priors (B, 4, S, S), labels (B, S, S); axial
    slices through a tumour voxel with p = 0.67 (else a brain voxel), zero-padded or cropped
    around the slice centre to S, flipped in x and y with p = 0.5 each."""
    size = spec.net.size
    images = np.zeros((batch, 4, size, size), np.float32)
    priors = np.zeros((batch, 4, size, size), np.float32)
    labels = np.zeros((batch, size, size), np.uint8)
    for b in range(batch):
        case = cases[int(rng.integers(len(cases)))]
        pool = case.tumour if len(case.tumour) and rng.random() < 0.67 else case.brain
        z = int(pool[int(rng.integers(len(pool))), 2])
        planes = [case.image[..., z], case.prior[..., z], case.labels[None, ..., z]]
        for axis in (1, 2):
            if rng.random() < 0.5:
                planes = [np.flip(plane, axis) for plane in planes]
        images[b], priors[b], labels[b] = (fit_planes(np.asarray(plane, np.float32), size)[0]
                                           for plane in (planes[0], planes[1], planes[2][0]))
    return images, priors, labels


def with_prior_channels(cases) -> list:
    """RefineCases as LoadedCases whose image carries the prior as 4 more channels, so the
    segmentation patch sampler crops both at once (built once, before training)."""
    from tumorcli.train.data import LoadedCase

    return [LoadedCase(c.name, np.concatenate([c.image, c.prior]), c.labels, c.tumour, c.brain)
            for c in cases]


def patch_batch(stacked, batch: int, spec: RefinerSpec, rng: np.random.Generator):
    """3D refiner batch: images (B, 4, P, P, P), priors (B, 4, ...), labels (B, ...), from the
    segmentation patch sampler (tumour-biased, flips) over `with_prior_channels` cases."""
    from tumorcli.train.data import sample_patches

    patch = (spec.net.patch,) * 3
    both, labels = sample_patches(stacked, batch, patch, rng, intensity_channels=4)
    return np.ascontiguousarray(both[:, :4]), np.ascontiguousarray(both[:, 4:]), labels


@torch.no_grad()
def validate(net, spec: RefinerSpec, cases, device, config) -> tuple[float, float]:
    """Mean TC/WT/ET Dice over `cases` of the prior and of the refined labels (conditional,
    DDIM, val_steps steps, seed 0)."""
    from tumorcli.infer.refine import Refiner
    from tumorcli.nets.segmentation import regions_from_classes, regions_from_labels
    from tumorcli.train.segment import region_dice

    if not cases:
        return float("nan"), float("nan")
    was_training = net.training
    refiner = Refiner(net, spec, device)
    scores = {"prior": [], "refined": []}
    for case in cases:
        prior = torch.from_numpy(case.prior.astype(np.float32))
        refined = refiner.refine(case.image.astype(np.float32), prior, steps=config.val_steps)
        truth = regions_from_labels(torch.from_numpy(case.labels)).bool()
        for name, classes in (("prior", prior), ("refined", refined.fractions)):
            scores[name].append(float(region_dice(regions_from_classes(classes) >= 0.5,
                                                  truth).mean()))
    net.train(was_training)
    return float(np.mean(scores["prior"])), float(np.mean(scores["refined"]))


def _prior_split(prior_folder: Path, cases: dict) -> dict | None:
    """The prior model's split when it covers this cohort (its test patients stay unseen)."""
    from tumorcli.train.data import read_split

    try:
        split = read_split(prior_folder)
    except (OSError, KeyError, ValueError):
        return None
    if not split["train"] or not set(split["train"]) <= set(cases):
        return None
    return {part: [n for n in names if n in cases] for part, names in split.items()}
