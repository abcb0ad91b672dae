"""Post-treatment T1c from the pre-treatment T1c + tumour mask + survival class.

Each axial slice of the pre scan (on the model's grid) is encoded; the denoiser, driven by a
shared sampler, turns one noise map into the post latent of every slice. The same noise map is
used for all slices of a sample and the samplers run deterministically (DDIM, DPM-Solver++), so
neighbouring slices, whose conditions differ little, get consistent predictions instead of
independent draws. Classifier-free guidance evaluates the conditional and unconditional passes
in one batch: out = uncond + w·(cond − uncond).

PSNR and SSIM reward the conditional mean, and a single sample re-draws what the inputs cannot
tell; the default output is the model's one-call estimate of that mean (POSTERIOR_MEAN), the
alternative the mean of several samples drawn in one batch. Away from the
tumour (beyond the model's detail margin) the pre scan's own fine detail, which the autoencoder
and the 2 mm model grid lose, is added back: there the follow-up is the same tissue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tumorcli.errors import BadInput
from tumorcli.infer.post_inputs import model_units, slices_to_volume, volume_slices
from tumorcli.infer.prepare import onto_grid, prepare
from tumorcli.io.itk import Grid
from tumorcli.io.volume import Volume
from tumorcli.nets.latent_diffusion import (SURVIVAL_CLASSES, PostModelConfig, build_autoencoder,
                                            build_denoiser, class_plane)
from tumorcli.nets.weights import load_weights, read_config_of
from tumorcli.samplers import make_sampler
from tumorcli.samplers.schedule import NoiseSchedule

DEFAULT_SAMPLES = 4   # --method samples: the mean of this many samples
DEFAULT_STEPS = 20
# the default output: the denoiser's clean-latent estimate from pure noise at the last
# timestep, i.e. its estimate of E[post latent | pre, mask, class] (what PSNR rewards)
POSTERIOR_MEAN = {"samples": 1, "steps": 1, "sampler": "ddim"}


@dataclass(frozen=True)
class PostPrediction:
    mean: Volume            # predicted post-treatment T1c, input grid and intensity scale
    std: Volume | None      # voxel-wise sd over samples (None for one sample)
    samples: tuple[np.ndarray, ...] = ()   # each sample (X, Y, Z), detail included
    detail: np.ndarray | None = None       # the pre scan's detail that was added (X, Y, Z)
    lost: np.ndarray | None = None         # pre − decode(encode(pre)) on the input grid


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
        config = PostModelConfig.from_dict(read_config_of(folder, "predict-post",
                                                          "predict-post"))
        return PostPredictor(
            config,
            load_weights(build_autoencoder(config.autoencoder),
                         Path(folder) / "autoencoder.safetensors"),
            load_weights(build_denoiser(config), Path(folder) / "denoiser.safetensors"), device)

    @torch.no_grad()
    def predict(self, pre: Volume, mask: Volume, survival: str, *, guidance: float = 2.0,
                steps: int = DEFAULT_STEPS, sampler: str = "dpmpp",
                samples: int = DEFAULT_SAMPLES, seed: int = 0, batch: int = 256,
                shared_noise: bool = True, detail: bool = True,
                advance=lambda steps=1: None) -> PostPrediction:
        """The mean of `samples` predictions (and their sd) on `pre`'s grid, all samples in
        one batch. detail=False leaves out the pre scan's own detail away from the tumour (see
        `detail_weight`); shared_noise=False draws independent noise per slice (only to
        measure what sharing buys). `advance` is called once per sampler step."""
        if pre.shape[:3] != mask.shape[:3] or not np.allclose(pre.affine, mask.affine, atol=1e-3):
            raise BadInput(f"{mask.source}: the mask is not on the grid of {pre.source}",
                           "segment the same scan, or carry the mask over with tumor preprocess")
        config = self.config
        prepared = prepare({"t1c": pre}, ("t1c",), config.spacing_mm)
        tumour = onto_grid((np.asarray(mask.array) > 0).astype(np.float32), Grid.of(mask),
                           prepared.grid, blur=False)
        image, scale, offset = model_units(prepared, tumour, config.intensity)
        keep = prepared.brain.any(axis=(0, 1))
        pre_slices = torch.from_numpy(volume_slices(image, keep, config.pad_multiple))
        mask_slices = torch.from_numpy(volume_slices(tumour, keep, config.pad_multiple))
        pre_latents = torch.cat([self.autoencoder.encode(c.to(self.device))[0]
                                 for c in pre_slices.split(batch)])   # (K, C, h, w)
        condition = torch.cat([pre_latents * config.latent_scale, torch.nn.functional.avg_pool2d(
            mask_slices, config.autoencoder.factor).to(self.device)], 1)
        noise = []
        for sample in range(samples):   # (K, C, h, w) each: one map shared by all slices
            generator = torch.Generator().manual_seed(seed * 1000 + sample)
            shape = (1 if shared_noise else len(condition), config.autoencoder.latent_channels,
                     *condition.shape[-2:])
            noise.append(torch.randn(shape, generator=generator).expand(len(condition), -1, -1,
                                                                        -1))
        generator = torch.Generator().manual_seed(seed * 1000 + samples)   # stochastic samplers
        latents = self.sample_latents(torch.cat(noise).to(self.device),
                                      condition.repeat(samples, 1, 1, 1),
                                      SURVIVAL_CLASSES.index(survival), guidance=guidance,
                                      steps=steps, sampler=sampler, generator=generator,
                                      batch=batch, advance=advance)
        if config.target == "residual":   # the diffused change, added to the pre latent
            latents = condition[:, :latents.shape[1]].repeat(samples, 1, 1, 1) \
                + latents / config.target_scale
        to_input = lambda slices: self._on_input(slices, keep, prepared, scale, offset)
        decoded = self._decode(latents / config.latent_scale, batch)   # (S·K, H, W)
        predictions = [to_input(chunk) for chunk in np.split(decoded, samples)]
        brain = onto_grid(prepared.brain.astype(np.float32), prepared.grid,
                          prepared.source_grid, blur=False) >= 0.5
        added = None
        # what the autoencoder (and the model grid) lose of the pre scan, put back where
        # treatment does not act
        lost = np.where(brain, np.asarray(pre.array, np.float32)
                        - to_input(self._decode(pre_latents, batch)), 0).astype(np.float32)
        if detail and config.detail_margin_mm is not None:
            weight = detail_weight(np.asarray(mask.array) > 0, Grid.of(pre).spacing,
                                   config.detail_margin_mm, config.detail_ramp_mm)
            added = (weight * lost).astype(np.float32)
            predictions = [p + added for p in predictions]
        predictions = [np.where(brain, p, 0).astype(np.float32) for p in predictions]
        std = np.std(predictions, axis=0) if samples > 1 else None
        make = lambda array: Volume(array.astype(np.float32), pre.affine, pre.header,
                                    source=pre.source)
        return PostPrediction(make(np.mean(predictions, axis=0)),
                              None if std is None else make(std), tuple(predictions), added,
                              lost)

    def _decode(self, latents: torch.Tensor, batch: int) -> np.ndarray:
        """(N, C, h, w) unscaled latents -> (N, H, W) slices in model units."""
        return torch.cat([self.autoencoder.decode(chunk) for chunk in latents.split(batch)]
                         ).float().cpu().numpy()[:, 0]

    def _on_input(self, slices: np.ndarray, keep: np.ndarray, prepared, scale: float,
                  offset: float) -> np.ndarray:
        """(K, H, W) slices in model units -> a volume on the input grid in the scan's units."""
        volume = slices_to_volume(slices, keep, prepared.grid.shape) * scale + offset
        return onto_grid(volume.astype(np.float32), prepared.grid, prepared.source_grid,
                         blur=False)

    def sample_latents(self, noise: torch.Tensor, condition: torch.Tensor, label: int, *,
                       guidance: float = 2.0, steps: int = DEFAULT_STEPS,
                       sampler: str = "dpmpp", generator: torch.Generator | None = None,
                       batch: int = 256, advance=lambda steps=1: None) -> torch.Tensor:
        """Clean latents (K, C, h, w) from noise (K, C, h, w) and the condition (K, C + 1, h, w);
        the denoiser sees `batch` slices at a time (on CUDA in bfloat16 unless self.autocast
        is False)."""
        half = self.device.type == "cuda" and self.autocast
        with torch.autocast(self.device.type, torch.bfloat16, enabled=half):
            return self._denoise(noise, condition, label, guidance, steps, sampler, generator,
                                 batch, advance)

    def _denoise(self, noise, condition, label, guidance, steps, sampler_name, generator,
                 batch=256, advance=lambda steps=1: None):
        """The clean post latents (K, C, h, w) of all slices: one sampler over the whole
        batch, the denoiser called on chunks of `batch` slices."""
        sampler = make_sampler(sampler_name, self.schedule, self.config.prediction)
        sampler.set_timesteps(steps)
        x = noise.clone()
        guided = label != 0 and guidance != 1.0
        for t in sampler.timesteps.tolist():
            output = torch.cat([self._guided_output(x[start:start + batch], chunk, t, label,
                                                    guidance if guided else None)
                                for start, chunk in zip(range(0, len(x), batch),
                                                        condition.split(batch))])
            x = sampler.step(output, t, x, generator=generator)
            advance()
        return x

    def _guided_output(self, x, condition, t, label, guidance):
        """The denoiser's output for one chunk; with guidance, uncond + w·(cond − uncond) from
        one batch holding both passes."""
        if guidance is None:
            labels = torch.full((len(x),), label, device=x.device)
            return self._denoiser_output(x, condition, t, labels)
        labels = torch.tensor([0] * len(x) + [label] * len(x), device=x.device)
        both = self._denoiser_output(torch.cat([x, x]), torch.cat([condition] * 2), t, labels)
        unconditional, conditional = both.chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    def _denoiser_output(self, x, condition, t, labels):
        inputs = [x, condition] + ([class_plane(labels, x)] if self.config.class_channel else [])
        return self.denoiser(torch.cat(inputs, 1), torch.full((len(x),), t, device=x.device),
                             class_labels=labels).float()


def detail_weight(tumour: np.ndarray, spacing_mm, margin_mm: float, ramp_mm: float
                  ) -> np.ndarray:
    """(X, Y, Z) in [0, 1]: 0 within `margin_mm` of the tumour mask (where treatment acts and
    the model alone decides), rising linearly to 1 over the next `ramp_mm`; 1 everywhere when
    the mask is empty."""
    from scipy import ndimage

    if not tumour.any():
        return np.ones(tumour.shape, np.float32)
    distance = ndimage.distance_transform_edt(~tumour, sampling=spacing_mm)
    return np.clip((distance - margin_mm) / max(ramp_mm, 1e-6), 0, 1).astype(np.float32)
