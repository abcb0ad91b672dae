"""Post-treatment T1c from the pre-treatment T1c + tumour mask + survival class.

Each axial slice of the pre scan (on the model's grid) is encoded; the denoiser, driven by a
shared sampler, turns one noise map into the post latent of every slice. The same noise map is
used for all slices of a sample and the samplers run deterministically (DDIM, DPM-Solver++), so
neighbouring slices, whose conditions differ little, get consistent predictions instead of
independent draws. Classifier-free guidance evaluates the conditional and unconditional passes
in one batch: out = uncond + w·(cond − uncond).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tumorcli.errors import BadInput
from tumorcli.infer.prepare import onto_grid, prepare
from tumorcli.io.itk import Grid
from tumorcli.io.volume import Volume
from tumorcli.nets.latent_diffusion import (SURVIVAL_CLASSES, PostModelConfig, build_autoencoder,
                                            build_denoiser)
from tumorcli.nets.weights import load_weights, read_config
from tumorcli.samplers import make_sampler
from tumorcli.samplers.schedule import NoiseSchedule
from tumorcli.train.post_data import unpad, volume_slices


@dataclass(frozen=True)
class PostPrediction:
    mean: Volume            # predicted post-treatment T1c, input grid and intensity scale
    std: Volume | None      # voxel-wise sd over samples (None for one sample)


class PostPredictor:
    def __init__(self, config: PostModelConfig, autoencoder: torch.nn.Module,
                 denoiser: torch.nn.Module, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.autoencoder = autoencoder.to(device).eval()
        self.denoiser = denoiser.to(device).eval()
        self.schedule = NoiseSchedule.make(config.schedule, config.train_steps)
        self.autocast = True   # bfloat16 denoiser on CUDA (the samplers' arithmetic stays float32)

    @staticmethod
    def load(folder: Path, device: torch.device) -> "PostPredictor":
        """The model in `folder` (config.json, autoencoder and denoiser safetensors)."""
        data = read_config(folder)
        if data.get("kind") != "predict-post":
            raise BadInput(f"{folder}: a {data.get('kind', 'unknown')} model, not a predict-post "
                           "model", "pick a model made by tumor train predict-post")
        config = PostModelConfig.from_dict(data)
        return PostPredictor(
            config,
            load_weights(build_autoencoder(config.autoencoder),
                         Path(folder) / "autoencoder.safetensors"),
            load_weights(build_denoiser(config), Path(folder) / "denoiser.safetensors"), device)

    @torch.no_grad()
    def predict(self, pre: Volume, mask: Volume, survival: str, *, guidance: float = 2.0,
                steps: int = 20, sampler: str = "dpmpp", samples: int = 1, seed: int = 0,
                batch: int = 64, shared_noise: bool = True,
                advance=lambda steps=1: None) -> PostPrediction:
        """The mean of `samples` predictions (and their sd) on `pre`'s grid. shared_noise=False
        draws independent noise per slice (only to measure what sharing buys)."""
        if pre.shape[:3] != mask.shape[:3] or not np.allclose(pre.affine, mask.affine, atol=1e-3):
            raise BadInput(f"{mask.source}: the mask is not on the grid of {pre.source}",
                           "segment the same scan, or carry the mask over with tumor preprocess")
        config = self.config
        prepared = prepare({"t1c": pre}, ("t1c",), config.spacing_mm)
        tumour = onto_grid((np.asarray(mask.array) > 0).astype(np.float32), Grid.of(mask),
                           prepared.grid, blur=False)
        keep = prepared.brain.any(axis=(0, 1))
        pre_slices = torch.from_numpy(volume_slices(prepared.image[0], keep, config.pad_multiple))
        mask_slices = torch.from_numpy(volume_slices(tumour, keep, config.pad_multiple))
        factor = config.autoencoder.factor
        condition = torch.cat([
            torch.cat([self.autoencoder.encode(c.to(self.device))[0] for c in
                       pre_slices.split(batch)]) * config.latent_scale,
            torch.nn.functional.avg_pool2d(mask_slices, factor).to(self.device)], 1)
        label = SURVIVAL_CLASSES.index(survival)
        predictions = []
        for sample in range(samples):
            generator = torch.Generator().manual_seed(seed * 1000 + sample)
            shape = (1 if shared_noise else len(condition), config.autoencoder.latent_channels,
                     *condition.shape[-2:])
            noise = torch.randn(shape, generator=generator).to(self.device)
            noise = noise.expand(len(condition), -1, -1, -1)  # (K, C, h, w), one map shared
            latents = self.sample_latents(noise, condition, label, guidance=guidance,
                                          steps=steps, sampler=sampler, generator=generator,
                                          batch=batch)
            if config.target == "residual":   # the diffused change, added to the pre latent
                latents = condition[:, :latents.shape[1]] + latents / config.target_scale
            slices = torch.cat([self.autoencoder.decode(chunk / config.latent_scale)
                                for chunk in latents.split(batch)]).float().cpu().numpy()
            volume = np.zeros(prepared.grid.shape, np.float32)
            volume[:, :, keep] = np.moveaxis(unpad(slices[:, 0], prepared.grid.shape[:2]), 0, 2)
            predictions.append(volume * prepared.sds[0] + prepared.means[0])
            advance()
        brain = onto_grid(prepared.brain.astype(np.float32), prepared.grid,
                          prepared.source_grid, blur=False) >= 0.5
        on_input = [np.where(brain, onto_grid(p, prepared.grid, prepared.source_grid, blur=False),
                             0).astype(np.float32) for p in predictions]
        mean = np.mean(on_input, axis=0)
        std = np.std(on_input, axis=0) if samples > 1 else None
        make = lambda array: Volume(array, pre.affine, pre.header, source=pre.source)
        return PostPrediction(make(mean), None if std is None else make(std))

    def sample_latents(self, noise: torch.Tensor, condition: torch.Tensor, label: int, *,
                       guidance: float = 2.0, steps: int = 20, sampler: str = "dpmpp",
                       generator: torch.Generator | None = None, batch: int = 64) -> torch.Tensor:
        """Clean latents (K, C, h, w) from noise (K, C, h, w) and the condition (K, C + 1, h, w),
        `batch` slices at a time (on CUDA in bfloat16 unless self.autocast is False)."""
        half = self.device.type == "cuda" and self.autocast
        with torch.autocast(self.device.type, torch.bfloat16, enabled=half):
            return torch.cat([self._denoise(noise[start:start + batch], chunk, label, guidance,
                                            steps, sampler, generator)
                              for start, chunk in zip(range(0, len(condition), batch),
                                                      condition.split(batch))])

    def _denoise(self, noise, condition, label, guidance, steps, sampler_name, generator):
        """The clean post latents of one chunk of slices (B, C, h, w)."""
        sampler = make_sampler(sampler_name, self.schedule, self.config.prediction)
        sampler.set_timesteps(steps)
        x = noise.clone()
        guided = label != 0 and guidance != 1.0
        for t in sampler.timesteps.tolist():
            if guided:
                labels = torch.tensor([0] * len(x) + [label] * len(x), device=x.device)
                both = self.denoiser(torch.cat([torch.cat([x, x]), torch.cat([condition] * 2)], 1),
                                     torch.full((2 * len(x),), t, device=x.device),
                                     class_labels=labels)
                unconditional, conditional = both.float().chunk(2)
                output = unconditional + guidance * (conditional - unconditional)
            else:
                labels = torch.full((len(x),), label, device=x.device)
                output = self.denoiser(torch.cat([x, condition], 1),
                                       torch.full((len(x),), t, device=x.device),
                                       class_labels=labels).float()
            x = sampler.step(output, t, x, generator=generator)
        return x
