"""`tumor train predict-post`: stage 1 trains the slice autoencoder (L1 + SSIM + a small KL),
stage 2 the latent denoiser (v- or ε-prediction, survival class dropped with p = class_dropout
for classifier-free guidance, EMA weights). Both loops are below, each on one screen; a
checkpoint every `checkpoint_every` steps records the stage, so --resume picks up where it was.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tumorcli.nets.latent_diffusion import PostModelConfig, build_autoencoder, build_denoiser
from tumorcli.nets.weights import load_weights, save_weights, write_config
from tumorcli.samplers.schedule import NoiseSchedule
from tumorcli.train.checkpoint import append_log, load_checkpoint, read_state, save_checkpoint
from tumorcli.train.ema import EMA
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
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    seed: int = 0
    command: str = ""


def train_post_model(model: PostModelConfig, config: PostTrainConfig, out: Path,
                     device: torch.device, resume: bool = False,
                     advance: Callable[..., None] = lambda steps=1: None,
                     say: Callable[[str], None] = print) -> dict:
    """Both stages into `out`; returns the summary (losses, latent scale, seconds)."""
    from tumorcli.runtime import seed_everything
    from tumorcli.train.data import read_split, split_cases, write_split

    out.mkdir(parents=True, exist_ok=True)
    pairs = {pair.name: pair for pair in find_pairs(Path(config.data), config.post_session)}
    split = read_split(out) if resume else split_cases(list(pairs.values()), config.seed)
    if not resume:
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
    if resume:
        from tumorcli.nets.weights import read_config

        model = PostModelConfig.from_dict(read_config(out))
        state = read_state(out)
        # the model stays as written; "training" records this call's steps (they may change)
        write_config(out, {**model.to_dict(), "training": asdict(config)})
    if state["stage"] == "autoencoder":
        optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=config.autoencoder_lr)
        if resume:
            state = load_checkpoint(out, autoencoder, optimizer)
        advance(state["step"])
        train_autoencoder(autoencoder, optimizer, train, val, config, state, out, device, advance, say)
        save_weights(autoencoder, out / AUTOENCODER)
        state = {"stage": "denoiser", "step": 0}
    else:
        advance(config.autoencoder_steps)
    load_weights(autoencoder, out / AUTOENCODER)  # stage 2 sees the shipped fp16 weights
    latents = {part: encode_pairs(autoencoder, slices, device)
               for part, slices in (("train", train), ("val", val))}
    if not resume or "latent_scale" not in state:
        train_latents = latents["train"]
        scale = float(1 / train_latents["post"].std())
        target_scale = 1.0
        if model.target == "residual":
            residual = (train_latents["post"] - train_latents["pre"]) * scale
            target_scale = float(1 / residual.std())
        model = replace(model, latent_scale=scale, target_scale=target_scale)
        write_config(out, {**model.to_dict(), "training": asdict(config)})
        state["latent_scale"] = scale
    denoiser = build_denoiser(model).to(device)
    ema = EMA(denoiser, config.ema_decay)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.lr)
    if resume and state["step"] > 0:
        state = load_checkpoint(out, denoiser, optimizer, {"ema": ema.net})
    advance(state["step"])
    train_denoiser(denoiser, ema, optimizer, latents, model, config, state, out, device, advance, say)
    save_weights(ema.net, out / DENOISER)
    return {"output": str(out), "latent_scale": model.latent_scale, **state,
            "seconds": round(time.perf_counter() - began, 1)}


def train_autoencoder(net, optimizer, train, val, config, state, out, device, advance, say):
    from monai.losses import SSIMLoss

    images = torch.from_numpy(np.concatenate([np.concatenate([p.pre, p.post]) for p in train]))
    held_out = torch.from_numpy(np.concatenate([p.post for p in val or train[:1]]))[:64]
    losses = []
    for step in range(state["step"], config.autoencoder_steps):
        set_lr(optimizer, step, config.autoencoder_steps, config.autoencoder_lr,
               config.warmup_steps)
        rng = np.random.default_rng([config.seed, 1, step])
        batch = images[rng.integers(len(images), size=config.batch_size)].to(device)  # (B,1,H,W)
        with autocast(device):
            reconstruction, mu, sigma = net(batch)
        reconstruction, mu, sigma = reconstruction.float(), mu.float(), sigma.float()
        data_range = float(batch.max() - batch.min()) or 1.0
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1).sum((1, 2, 3))
        loss = ((reconstruction - batch).abs().mean()
                + config.ssim_weight * SSIMLoss(2, data_range=data_range)(reconstruction, batch)
                + config.kl_weight * kl.mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        advance()
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.autoencoder_steps:
            with torch.no_grad():
                net.eval()
                reconstructed = torch.cat([net.reconstruct(chunk.to(device)).cpu()
                                           for chunk in held_out.split(16)])
                net.train()
            val_l1 = float((reconstructed - held_out).abs().mean())
            state.update(step=step + 1, val_l1=val_l1)
            append_log(out / LOG, LOG_COLUMNS, ["autoencoder", step + 1,
                                                optimizer.param_groups[0]["lr"],
                                                float(np.mean(losses)), val_l1])
            save_checkpoint(out, net, optimizer, state)
            say(f"autoencoder step {step + 1}: loss {np.mean(losses):.4f}, val L1 {val_l1:.4f}")
            losses = []


def train_denoiser(net, ema, optimizer, latents, model, config, state, out, device, advance, say):
    schedule = NoiseSchedule.make(model.schedule, model.train_steps)
    data = {k: v * model.latent_scale if k in ("pre", "post") else v
            for k, v in latents["train"].items()}
    losses = []
    for step in range(state["step"], config.denoiser_steps):
        set_lr(optimizer, step, config.denoiser_steps, config.lr, config.warmup_steps)
        generator = torch.Generator().manual_seed(config.seed * 100003 + step)
        pick = torch.randint(len(data["post"]), (config.batch_size,), generator=generator)
        post, pre, mask = (data[k][pick].to(device) for k in ("post", "pre", "mask"))
        if model.target == "residual":   # diffuse the change; the pre latent is the condition
            post = (post - pre) * model.target_scale
        survival = data["survival"][pick].clone()
        survival[torch.rand(len(pick), generator=generator) < config.class_dropout] = 0
        t = torch.randint(model.train_steps, (len(pick),), generator=generator)
        noise = torch.randn(post.shape, generator=generator).to(device)
        noisy = schedule.add_noise(post, noise, t.to(device))
        target = schedule.velocity(post, noise, t.to(device)) \
            if model.prediction == "v_prediction" else noise
        with autocast(device):
            output = net(torch.cat([noisy, pre, mask], 1), t.to(device),
                         class_labels=survival.to(device))
        loss = torch.nn.functional.mse_loss(output.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(net)
        losses.append(float(loss.detach()))
        advance()
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.denoiser_steps:
            state.update(step=step + 1)
            append_log(out / LOG, LOG_COLUMNS, ["denoiser", step + 1,
                                                optimizer.param_groups[0]["lr"],
                                                float(np.mean(losses)), float("nan")])
            save_checkpoint(out, net, optimizer, state, {"ema": ema.net})
            say(f"denoiser step {step + 1}: loss {np.mean(losses):.4f}")
            losses = []
    state["stage"] = "done"


def autocast(device: torch.device):
    """bf16 mixed precision on CUDA (AMP); full precision on the CPU."""
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")


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
