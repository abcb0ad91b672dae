"""A future session from three earlier ones: t1n, t1c, t2f and the whole-tumour mask at a target
day under a chosen treatment (nets/growth.py, after TaDiff).

The sessions are put in the last source's scanner conditions (infer/growth_inputs), sliced
axially and denoised together by a shared sampler, one noise map shared by all slices of a
sample (coherent volumes, as predict-post does). The net diffuses the change from the last
source session; the predicted change is resampled onto the input grid and added to the last
session's own image, so its full-resolution detail is kept where nothing changes. The default
(samples=1, steps=1) is the net's one-call estimate of the conditional mean, x0-hat from pure
noise at t = T; more samples (DPM-Solver++ or DDIM, `steps` each) give the mean and the
voxel-wise sd over samples (the uncertainty map). The mask: the net's mask output (mean over
samples) on the input grid, plus the model's mask prior on the last session's own mask
(nets/growth.mask_logits), probability ≥ 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from tumorcli.errors import BadInput
from tumorcli.infer.growth_inputs import SessionStack, stack_sessions
from tumorcli.infer.post_inputs import slices_to_volume
from tumorcli.infer.prepare import onto_grid
from tumorcli.io.volume import Volume
from tumorcli.nets.growth import (MODALITIES, SOURCES, WEIGHTS, GrowthConfig,
                                  build_growth_net, condition_vector, mask_logits)
from tumorcli.nets.weights import load_weights, read_config_of
from tumorcli.samplers import make_sampler
from tumorcli.samplers.schedule import NoiseSchedule


@dataclass(frozen=True)
class GrowthPrediction:
    images: dict[str, Volume]      # modality → predicted image, input grid, last session's scale
    mask: Volume                   # uint8 whole-tumour mask (1) on the input grid
    probability: Volume            # its probability, mean over samples
    uncertainty: Volume | None     # sd over samples, mean over modalities, tissue units
    volume_cm3: float              # of the mask


@dataclass(frozen=True)
class GrowthInputs:
    stack: SessionStack            # harmonised to the last source session
    sources: torch.Tensor          # (K, SOURCES · 4, H, W) what the net sees of them
    last: dict[str, Volume]        # the last source session as read (its grid and scale)
    last_mask: Volume


class GrowthPredictor:
    def __init__(self, config: GrowthConfig, net: torch.nn.Module, device: torch.device) -> None:
        self.config = config
        self.net = net.to(device).eval()
        self.device = device
        self.schedule = NoiseSchedule.make(config.schedule, config.train_steps)

    @staticmethod
    def load(folder: Path, device: torch.device) -> "GrowthPredictor":
        config = GrowthConfig.from_dict(read_config_of(folder, "growth", "growth"))
        return GrowthPredictor(config, load_weights(build_growth_net(config),
                                                    Path(folder) / WEIGHTS), device)

    def inputs(self, sessions: list[dict[str, Volume]], masks: list[Volume]) -> "GrowthInputs":
        """The sources (SOURCES sessions in time order, each modality → Volume on one grid, and
        their masks) harmonised and sliced once; `predict` can reuse them for several target
        days or treatments."""
        if len(sessions) != SOURCES:
            raise BadInput(f"{len(sessions)} sessions given: the model needs {SOURCES}",
                           "give three earlier sessions (repeat the earliest if you have fewer)")
        stack = stack_sessions(sessions, masks, self.config.spacing_mm, reference=-1)
        images, tumour = stack.slices(self.config.pad_multiple)
        sources = torch.from_numpy(np.concatenate(   # (K, SOURCES · 4, H, W)
            [np.concatenate([images[s], tumour[s]], 1) for s in range(SOURCES)], 1))
        return GrowthInputs(stack, sources, sessions[-1], masks[-1])

    @torch.no_grad()
    def predict(self, sessions: "list[dict[str, Volume]] | GrowthInputs", masks: list[Volume],
                days: list[float], treatments: list[str], target_day: float,
                target_treatment: str, *, samples: int = 1, steps: int = 1,
                sampler: str = "dpmpp", seed: int = 0, batch: int = 64,
                advance=lambda steps=1: None) -> GrowthPrediction:
        """The target session from the sources (see `inputs`; or GrowthInputs it made, masks
        then unused), their days (after diagnosis) and treatments, at `target_day` under
        `target_treatment`."""
        given = sessions if isinstance(sessions, GrowthInputs) else self.inputs(sessions, masks)
        if target_day <= days[-1]:
            raise BadInput(f"--target-day {target_day:g}: not after the last session (day "
                           f"{days[-1]:g})", "give a later day")
        sources = given.sources
        condition = condition_vector(days, treatments, target_day, target_treatment)
        changes, outputs = [], []
        for sample in range(samples):
            generator = torch.Generator().manual_seed(seed * 1000 + sample)
            noise = torch.randn((1, len(MODALITIES), *sources.shape[-2:]), generator=generator)
            change, mask_output = self._denoise(noise.expand(len(sources), -1, -1, -1), sources,
                                                condition, steps, sampler, generator, batch,
                                                advance)
            changes.append(change / self.config.change_scale)
            outputs.append(mask_output)
        return self._assemble(given.stack, given.last, given.last_mask,
                              torch.stack(changes).numpy(), torch.stack(outputs).mean(0).numpy())

    def _denoise(self, noise, sources, condition, steps, sampler_name, generator, batch,
                 advance):
        """(change (K, 3, H, W) in diffusion units, mask logits (K, 1, H, W)) of the last
        call."""
        sampler = make_sampler(sampler_name, self.schedule, self.config.prediction)
        sampler.set_timesteps(steps)
        x, logits = noise.clone(), None
        half = self.device.type == "cuda"
        for t in sampler.timesteps.tolist():
            outputs = []
            for start in range(0, len(x), batch):
                chunk = torch.cat([x[start:start + batch], sources[start:start + batch]], 1)
                labels = condition.expand(len(chunk), -1).to(self.device)
                with torch.autocast(self.device.type, torch.bfloat16, enabled=half):
                    outputs.append(self.net(chunk.to(self.device),
                                            torch.full((len(chunk),), t, device=self.device),
                                            class_labels=labels).float().cpu())
            output = torch.cat(outputs)
            logits = output[:, len(MODALITIES):]
            x = sampler.step(output[:, :len(MODALITIES)], t, x, generator=generator)
            advance()
        return x, logits

    def _assemble(self, stack, last: dict[str, Volume], last_mask: Volume, changes: np.ndarray,
                  output: np.ndarray) -> GrowthPrediction:
        """Slices back to volumes on the input grid: last session + predicted change; the mask
        from the net's mask output (mean over samples), resampled, and with a mask prior the
        last session's own mask on the input grid (full resolution where nothing changes)."""
        keep, grid, source = stack.keep, stack.reference.grid, stack.reference.source_grid
        on_input = lambda slices: onto_grid(slices_to_volume(slices, keep, grid.shape)
                                            .astype(np.float32), grid, source, blur=False)
        brain = onto_grid(stack.brain.astype(np.float32), grid, source, blur=False) >= 0.5
        mean = changes.mean(0)
        out = {}
        for c, modality in enumerate(MODALITIES):
            volume = last[modality]
            change = on_input(mean[:, c]) * float(stack.scales[-1, c])
            image = np.where(brain, np.asarray(volume.array, np.float32) + change, 0)
            out[modality] = Volume(image.astype(np.float32), volume.affine, volume.header,
                                   source=volume.source)
        reference = last[MODALITIES[0]]
        logits = mask_logits(on_input(output[:, 0]), np.asarray(last_mask.array) > 0,
                             self.config.mask_prior)
        chance = np.where(brain, expit(logits), 0)
        mask = (chance >= 0.5).astype(np.uint8)
        sd = None
        if len(changes) > 1:
            spread = changes.std(0).mean(1)   # (K, H, W), tissue units
            sd = Volume(np.where(brain, on_input(spread), 0)
                        .astype(np.float32), reference.affine, reference.header)
        return GrowthPrediction(out, Volume(mask, reference.affine, reference.header),
                                Volume(chance.astype(np.float32), reference.affine,
                                       reference.header), sd,
                                float(mask.sum() * reference.voxel_volume_mm3 / 1000))

