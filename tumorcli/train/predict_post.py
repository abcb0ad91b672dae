"""`tumor train predict-post`: stage 1 trains the slice autoencoder (L1 + SSIM + a small KL),
stage 2 the latent denoiser (v- or ε-prediction, survival class dropped with p = class_dropout
for classifier-free guidance, EMA weights). Both loops are below, each on one screen; a
checkpoint every `checkpoint_every` steps records the stage, so --resume picks up where it was.
Under torchrun each rank trains on its slice of the global batch (train/distributed.py); SIGTERM
or SIGUSR1 checkpoints at the next step of either stage and stops (train/preempt.py).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tumorcli.nets.latent_diffusion import (PostModelConfig, build_autoencoder, build_denoiser,
                                            class_plane)
from tumorcli.nets.weights import load_weights, save_weights, write_config
from tumorcli.samplers.schedule import NoiseSchedule
from tumorcli.train import distributed, preempt
from tumorcli.train.checkpoint import (append_log, load_checkpoint, read_state, save_checkpoint,
                                       unlogged_losses)
from tumorcli.train.ema import EMA
from tumorcli.train.loop import Steps, autocast, run_steps
from tumorcli.train.losses import slice_odds, weighted_mse
from tumorcli.train.post_data import find_pairs, load_pair
from tumorcli.train.schedule import set_lr

AUTOENCODER, DENOISER = "autoencoder.safetensors", "denoiser.safetensors"
LOG = "train_log.csv"
LOG_COLUMNS = ("stage", "step", "lr", "train_loss", "val_l1")


@dataclass(frozen=True)
class PostTrainConfig:
    data: str
    post_session: str = "next"      # which follow-up is "post": next | last (post_data)
    autoencoder_steps: int = 2000
    denoiser_steps: int = 4000
    batch_size: int = 16
    autoencoder_lr: float = 5e-4
    lr: float = 2e-4
    warmup_steps: int = 100
    ssim_weight: float = 0.5
    kl_weight: float = 1e-6
    class_dropout: float = 0.15
    balance_classes: bool = False   # draw short and long survivors' slices equally often
    tumour_slices: float = 0.0      # share of draws from slices with pre-treatment tumour
    tumour_weight: float = 0.0      # loss weight 1 + this near the tumour (train/losses.py)
    ema_decay: float = 0.999
    autoencoder_from: str = ""      # a model folder whose autoencoder is reused (no stage 1)
    checkpoint_every: int = 250
    seed: int = 0
    command: str = ""


def train_post_model(model: PostModelConfig, config: PostTrainConfig, out: Path,
                     device: torch.device, resume: bool = False,
                     advance: Callable[..., None] = lambda steps=1: None,
                     say: Callable[[str], None] = print) -> dict:
    """Both stages into `out`; returns the summary (losses, latent scale, seconds), or, when
    SIGTERM/SIGUSR1 stopped the run, the summary with "stopped" (train/preempt.py)."""
    from tumorcli.runtime import seed_everything
    from tumorcli.train.data import read_split, split_cases, write_split

    rank, world, device = distributed.setup(device)
    say = distributed.on_rank_zero(say)
    out.mkdir(parents=True, exist_ok=True)
    pairs = {pair.name: pair for pair in find_pairs(Path(config.data), config.post_session)}
    split = read_split(out) if resume else split_cases(list(pairs.values()), config.seed)
    if not resume and rank == 0:
        write_split(out, split, Path(config.data), config.seed)
        write_config(out, {**model.to_dict(), "training": asdict(config)})
    say(f"{len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test patients")
    load = lambda names: [load_pair(pairs[n], model.spacing_mm, model.pad_multiple,
                                         model.intensity) for n in names]
    train, val = load(split["train"]), load(split["val"][:4])
    seed_everything(config.seed)
    began = time.perf_counter()

    autoencoder = build_autoencoder(model.autoencoder).to(device)
    state = {"stage": "autoencoder", "step": 0}
    if config.autoencoder_from and not resume:
        if rank == 0:
            shutil.copyfile(Path(config.autoencoder_from) / AUTOENCODER, out / AUTOENCODER)
        distributed.barrier()
        state = {"stage": "denoiser", "step": 0}
    if resume:
        from tumorcli.nets.weights import read_config

        model = PostModelConfig.from_dict(read_config(out))
        state = read_state(out)
        if rank == 0:   # the model stays as written; "training" records this call's steps
            write_config(out, {**model.to_dict(), "training": asdict(config)})
    with preempt.stop_on_signals() as stop:
        if state["stage"] == "autoencoder":
            optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=config.autoencoder_lr)
            if resume:
                state = load_checkpoint(out, autoencoder, optimizer)
            advance(state["step"])
            stopped = train_autoencoder(autoencoder, optimizer, train, val, config, state, out,
                                        device, advance, say, stop)
            if stopped:
                return stopped
            if rank == 0:
                save_weights(autoencoder, out / AUTOENCODER)
            distributed.barrier()
            state = {"stage": "denoiser", "step": 0}
        else:
            advance(config.autoencoder_steps)
        load_weights(autoencoder, out / AUTOENCODER)  # stage 2 sees the shipped fp16 weights
        latents = {part: encode_pairs(autoencoder, slices, device)
                   for part, slices in (("train", train), ("val", val))}
        if not resume or "latent_scale" not in state:
            model = with_latent_scales(model, latents["train"])
            if rank == 0:
                write_config(out, {**model.to_dict(), "training": asdict(config)})
            state["latent_scale"] = model.latent_scale
        denoiser = build_denoiser(model).to(device)
        ema = EMA(denoiser, config.ema_decay)
        optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.lr)
        if resume and state["step"] > 0:
            state = load_checkpoint(out, denoiser, optimizer, {"ema": ema.net})
        advance(state["step"])
        stopped = train_denoiser(denoiser, ema, optimizer, latents, model, config, state, out,
                                 device, advance, say, stop)
        if stopped:
            return stopped
    if rank == 0:
        save_weights(ema.net, out / DENOISER)
    distributed.finish()
    return {"output": str(out), "rank": rank, "latent_scale": model.latent_scale, **state,
            "seconds": round(time.perf_counter() - began, 1)}


def with_latent_scales(model: PostModelConfig, train_latents: dict) -> PostModelConfig:
    """`model` with the latent scale (1 / std of the post latents) and, for a residual target,
    the scale that gives the scaled residual unit std."""
    scale = float(1 / train_latents["post"].std())
    target_scale = 1.0
    if model.target == "residual":
        residual = (train_latents["post"] - train_latents["pre"]) * scale
        target_scale = float(1 / residual.std())
    return replace(model, latent_scale=scale, target_scale=target_scale)


def train_autoencoder(net, optimizer, train, val, config, state, out, device, advance, say,
                      stop) -> dict | None:
    """Stage 1 from state["step"]; None when done, the stopped summary when `stop` rose."""
    from monai.losses import SSIMLoss

    images = torch.from_numpy(np.concatenate([np.concatenate([p.pre, p.post]) for p in train]))
    held_out = torch.from_numpy(np.concatenate([p.post for p in val or train[:1]]))[:64]
    draw = lambda rng: (rng.integers(len(images), size=1),)   # one slice of the global batch
    model, rank, losses = distributed.wrap(net, device), distributed.rank(), unlogged_losses(state)
    for step in range(state["step"], config.autoencoder_steps):
        set_lr(optimizer, step, config.autoencoder_steps, config.autoencoder_lr,
               config.warmup_steps)
        pick, = distributed.draw_batch_slice(draw, (config.seed, 1, step), config.batch_size)
        batch = images[torch.from_numpy(pick)].to(device)                  # (B, 1, H, W)
        with autocast(device):
            reconstruction, mu, sigma = model(batch)
        reconstruction, mu, sigma = reconstruction.float(), mu.float(), sigma.float()
        data_range = float(batch.max() - batch.min()) or 1.0
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1).sum((1, 2, 3))
        loss = ((reconstruction - batch).abs().mean()
                + config.ssim_weight * SSIMLoss(2, data_range=data_range)(reconstruction, batch)
                + config.kl_weight * kl.mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value, stop_now = distributed.mean_and_any(float(loss.detach()), stop.requested,
                                                        device)
        losses.append(loss_value)   # the global batch's loss: the mean over ranks
        advance()
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.autoencoder_steps:
            if rank == 0:
                val_l1 = reconstruction_l1(net, held_out, device)
                state.update(step=step + 1, val_l1=val_l1)
                append_log(out / LOG, LOG_COLUMNS, ["autoencoder", step + 1,
                                                    optimizer.param_groups[0]["lr"],
                                                    float(np.mean(losses)), val_l1])
                save_checkpoint(out, net, optimizer, state)
                say(f"autoencoder step {step + 1}: loss {np.mean(losses):.4f}, val L1 "
                    f"{val_l1:.4f}")
            losses = []
        if stop_now:   # every rank saw the same flag at this step
            return preempt.checkpoint_and_stop(stop, out, net, optimizer, state, step + 1,
                                               losses, stage="autoencoder")
    return None


@torch.no_grad()
def reconstruction_l1(net, held_out: torch.Tensor, device) -> float:
    """Mean |x − decode(encode(x))| over the held-out slices (B, 1, H, W), in 16s."""
    net.eval()
    reconstructed = torch.cat([net.reconstruct(chunk.to(device)).cpu()
                               for chunk in held_out.split(16)])
    net.train()
    return float((reconstructed - held_out).abs().mean())


def train_denoiser(net, ema, optimizer, latents, model, config, state, out, device, advance, say,
                   stop) -> dict | None:
    """Stage 2 from state["step"]; None when done, the stopped summary when `stop` rose."""
    schedule = NoiseSchedule.make(model.schedule, model.train_steps)
    data = {k: v * model.latent_scale if k in ("pre", "post") else v
            for k, v in latents["train"].items()}
    odds = (slice_odds(data["survival"], data["mask"], config.balance_classes,
                       config.tumour_slices)
            if config.balance_classes or config.tumour_slices > 0 else None)
    pick_slice = (lambda rng: rng.integers(len(data["post"]), size=1)) if odds is None else (
        lambda rng: rng.choice(len(odds), size=1, p=odds))
    draw = lambda rng: (pick_slice(rng),                                    # a latent slice,
                        rng.random(1) < config.class_dropout,              # its class dropped,
                        rng.integers(model.train_steps, size=1),           # t and ε
                        rng.standard_normal((1, *data["post"].shape[1:]), dtype=np.float32))
    wrapped = distributed.wrap(net, device)

    def loss_at(step: int) -> torch.Tensor:
        pick, dropped, t, noise = (torch.from_numpy(v) for v in distributed.draw_batch_slice(
            draw, (config.seed, 2, step), config.batch_size))
        post, pre, mask = (data[k][pick].to(device) for k in ("post", "pre", "mask"))
        if model.target == "residual":   # diffuse the change; the pre latent is the condition
            post = (post - pre) * model.target_scale
        survival = data["survival"][pick].clone()
        survival[dropped] = 0
        t, noise = t.to(device), noise.to(device)
        noisy = schedule.add_noise(post, noise, t)
        target = schedule.velocity(post, noise, t) if model.prediction == "v_prediction" else noise
        survival = survival.to(device)
        inputs = [noisy, pre, mask] + ([class_plane(survival, mask)] if model.class_channel
                                       else [])
        with autocast(device):
            output = wrapped(torch.cat(inputs, 1), t, class_labels=survival)
        return weighted_mse(output.float(), target, mask, config.tumour_weight)

    steps = Steps("denoiser", config.denoiser_steps, config.lr, config.warmup_steps,
                  config.checkpoint_every, out / LOG, LOG_COLUMNS)
    stopped = run_steps(net, ema, optimizer, state, steps, loss_at, out, device, advance, say,
                        stop)
    if stopped:
        return stopped
    state["stage"] = "done"
    return None


@torch.no_grad()
def encode_pairs(autoencoder, pairs, device) -> dict[str, torch.Tensor]:
    """Latent means of every pre/post slice, the mask at latent size, the survival class."""
    autoencoder.eval()
    pre, post, mask, survival = [], [], [], []
    for pair in pairs:
        for name, store in (("pre", pre), ("post", post)):
            slices = torch.from_numpy(getattr(pair, name))
            store.append(torch.cat([autoencoder.encode(chunk.to(device))[0].cpu()
                                    for chunk in slices.split(32)]))
        factor = pair.pre.shape[-1] // post[-1].shape[-1]
        mask.append(torch.nn.functional.avg_pool2d(torch.from_numpy(pair.mask), factor))
        survival.append(torch.full((len(pair.pre),), pair.survival, dtype=torch.long))
    return {"pre": torch.cat(pre), "post": torch.cat(post), "mask": torch.cat(mask),
            "survival": torch.cat(survival)}
