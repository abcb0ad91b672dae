"""Diffusion refinement of a coarse segmentation (`tumor segment --refine medsegdiff|ddpm`).

Conditional mode (the study's): the prior's class probabilities, mapped to diffusion space
(2p − 1), are noised to timestep t′ and a few DDIM / DPM-Solver++ steps bring them back while
the net sees the MR channels and the prior. Unconditional mode (for comparison) starts from pure
noise with the prior channels zeroed. Only a box around the prior's tumour (or, unconditional,
the brain) is refined; the prior stands outside it. MedSegDiff sees the box's axial slices
whole, as in training; the 3D refiner slides its patch over the box. Each of `samples` runs is
argmax'ed; the runs vote, and the vote's entropy is the uncertainty map. Conditional
refinement only moves the prior's boundaries: an island of a class that touches none of the
prior's voxels of that class goes back to the prior (`revert_islands`). Runs are seeded: same
seed, same labels. The refined labels then go through the refiner's own small-region rule
(config.json "postprocess", chosen on val sessions through this path by `tumor train refine`
or `tumor train postprocess --model REFINER --prior MODEL`), not the prior's: refinement
changes which small regions are stray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tumorcli.errors import BadInput
from tumorcli.infer.postprocess import LabelRule
from tumorcli.nets.refiner import RefinerSpec, fit_planes, plane_window
from tumorcli.nets.segmentation import classes_from_labels
from tumorcli.nets.weights import WEIGHTS, load_weights, read_config
from tumorcli.samplers import make_sampler
from tumorcli.samplers.schedule import NoiseSchedule

MARGIN = 8   # voxels of context around the prior's tumour box


@dataclass(frozen=True)
class RefineOptions:
    """How `tumor segment --refine` drives a refiner (see Refiner.refine)."""

    refiner: "Refiner"
    steps: int = 10
    start: int | None = None
    samples: int = 1
    seed: int = 0
    conditional: bool = True
    sampler: str = "ddim"


@dataclass(frozen=True)
class Refinement:
    fractions: torch.Tensor   # (4, X, Y, Z) share of the runs voting background/NETC/SNFH/ET
    entropy: torch.Tensor     # (X, Y, Z) entropy (nats) of that vote in the box; 0 with one
                              # run and outside the box


class Refiner:
    """`label_rule` is the rule for the refined labels (config.json "postprocess"; off when
    the refiner has none)."""

    def __init__(self, net: torch.nn.Module, spec: RefinerSpec, device: torch.device,
                 label_rule: LabelRule = LabelRule()) -> None:
        self.net, self.spec, self.device = net.eval(), spec, device
        self.label_rule = label_rule
        self.schedule = NoiseSchedule.make(spec.schedule, spec.train_steps)

    @staticmethod
    def load(folder: Path, device: torch.device, postprocess: bool = True) -> "Refiner":
        data = read_config(folder)
        if data.get("kind") != "refiner":
            raise BadInput(f"{folder}: a {data.get('kind', 'unknown')} model, not a refiner",
                           "pick a model made by tumor train refine")
        spec = RefinerSpec.from_dict(data)
        return Refiner(load_weights(spec.build(), Path(folder) / WEIGHTS).to(device), spec,
                       device, LabelRule.of_model(data, postprocess))

    def check_prior(self, config, folder: Path) -> None:
        """BadInput unless the segmentation model `config` works on this refiner's grid."""
        if (abs(config.spacing_mm - self.spec.spacing_mm) > 1e-6
                or tuple(config.modalities) != self.spec.modalities):
            raise BadInput(f"{folder}: refines a {self.spec.spacing_mm:g} mm prior of "
                           f"{'/'.join(self.spec.modalities)}, but the segmentation model works "
                           f"at {config.spacing_mm:g} mm", "pick a refiner trained with that "
                           "prior (tumor train refine --prior MODEL)")

    @torch.no_grad()
    def refine(self, image: np.ndarray, prior: torch.Tensor, *, steps: int = 10,
               start: int | None = None, samples: int = 1, seed: int = 0,
               conditional: bool = True, sampler: str = "ddim",
               advance=lambda steps=1: None) -> Refinement:
        """image (C, X, Y, Z) on the net grid, prior (4, X, Y, Z) class probabilities on it."""
        start = self.spec.start if start is None else start
        if conditional and not 1 <= steps <= start + 1:
            raise BadInput(f"--steps {steps}: must lie in 1–{start + 1} when refining from "
                           f"t′ = {start}", "e.g. --steps 10")
        brain = torch.from_numpy(np.abs(image).sum(0) > 0)
        box = _box(prior[1:].sum(0) >= 0.5 if conditional else brain, prior.shape[1:])
        if box is None:   # no tumour in the prior: nothing to refine
            return Refinement(prior.clone(), torch.zeros(prior.shape[1:]))
        context = self._context(box, prior.shape[1:])
        crop = (slice(None), *context)
        condition = torch.cat([torch.from_numpy(np.ascontiguousarray(image[crop], np.float32)),
                               prior[crop].float() if conditional
                               else torch.zeros_like(prior[crop], dtype=torch.float32)])
        votes = torch.zeros(prior[crop].shape)
        for sample in range(samples):
            generator = torch.Generator().manual_seed(seed * 1000 + sample)
            labels = self._sample(condition, prior[crop].float(), steps, start, conditional,
                                  sampler, generator)
            votes += classes_from_labels(labels[None])[0]
            advance()
        fractions = prior.clone().float() if conditional else \
            classes_from_labels(torch.zeros((1, *prior.shape[1:]), dtype=torch.long))[0]
        kept = [slice(max(b.start, c.start), min(b.stop, c.stop)) for b, c in zip(box, context)]
        within = [slice(k.start - c.start, k.stop - c.start) for k, c in zip(kept, context)]
        shares = votes[(slice(None), *within)] / samples
        fractions[(slice(None), *kept)] = shares
        entropy = torch.zeros(prior.shape[1:])
        entropy[tuple(kept)] = -(shares * shares.clamp(min=1e-12).log()).sum(0)
        if conditional:
            fractions = revert_islands(fractions, prior.float())
        return Refinement(fractions, entropy)

    def _context(self, box, shape) -> tuple[slice, slice, slice]:
        """What the net sees around `box`: the box for the 3D refiner; for MedSegDiff the box's
        axial slices whole, as in training (cropped to the net's size around the box when
        larger). Only the box itself is written back."""
        if not self.spec.is_2d:
            return box
        size = self.spec.net.size
        return (*(plane_window(n, size, (b.start + b.stop) // 2)[0]
                  for n, b in zip(shape[:2], box[:2])), box[2])

    def _sample(self, condition, prior, steps, start, conditional, sampler_name, generator):
        """One refinement of the context crop: (X, Y, Z) labels."""
        sampler = make_sampler(sampler_name, self.schedule, self.spec.prediction, clip=1.0)
        noise = torch.randn(prior.shape, generator=generator)
        if conditional:
            sampler.set_timesteps(steps, start=start)
            x = sampler.add_noise(2 * prior - 1, noise, start)
        else:
            sampler.set_timesteps(steps)
            x = noise
        condition, x = condition.to(self.device), x.to(self.device)
        for t in sampler.timesteps.tolist():
            output = self._predict(x, t, condition)
            x = sampler.step(output, t, x, generator=generator)
        return x.argmax(0).cpu()

    def _predict(self, x: torch.Tensor, t: int, condition: torch.Tensor) -> torch.Tensor:
        """The sampler's input for the whole context crop at timestep t: (4, X, Y, Z)."""
        spec = self.spec
        autocast = torch.autocast(self.device.type, torch.bfloat16,
                                  enabled=self.device.type == "cuda")
        if spec.is_2d:   # axial slices, batched, padded to the net's square size
            size = spec.net.size
            slices = torch.cat([x, condition]).permute(3, 0, 1, 2)        # (Z, 12, X, Y)
            padded, window = fit_planes(slices, size)
            outputs = []
            for chunk in padded.split(32):
                t_batch = torch.full((len(chunk),), t, device=self.device)
                with autocast:
                    raw = spec.run(self.net, chunk[:, :4], t_batch, chunk[:, 4:])
                outputs.append(spec.sampler_output(raw.float()))
            return torch.cat(outputs)[(slice(None), slice(None), *window)].permute(1, 2, 3, 0)
        from monai.inferers import sliding_window_inference

        def predictor(window: torch.Tensor) -> torch.Tensor:
            t_batch = torch.full((len(window),), t, device=self.device)
            with autocast:
                return spec.run(self.net, window[:, :4], t_batch, window[:, 4:]).float()

        patch = (spec.net.patch,) * 3
        raw = sliding_window_inference(torch.cat([x, condition])[None], patch, 2, predictor,
                                       overlap=0.25, mode="gaussian", padding_mode="constant")
        return spec.sampler_output(raw)[0]


def revert_islands(fractions: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Refinement moves boundaries; it does not add lesions. Each connected component (26-
    neighbourhood) of a refined class (NETC, SNFH, ET) that touches no voxel of that class in
    the prior goes back to the prior: a sampler's few stray voxels otherwise turn an empty
    region into BraTS's 373 mm HD95 and Dice 0. (4, X, Y, Z) -> (4, X, Y, Z)."""
    from scipy import ndimage

    refined, before = fractions.argmax(0).numpy(), prior.argmax(0).numpy()
    stray = np.zeros(refined.shape, bool)
    for label in (1, 2, 3):
        components, count = ndimage.label(refined == label, np.ones((3, 3, 3), bool))
        if count == 0:
            continue
        supported = np.unique(components[(before == label) & (components > 0)])
        stray |= (components > 0) & ~np.isin(components, supported)
    if not stray.any():
        return fractions
    out = fractions.clone()
    where = torch.from_numpy(stray)
    out[:, where] = prior[:, where]
    return out


def _box(mask: torch.Tensor, shape) -> tuple[slice, slice, slice] | None:
    """The bounding box of `mask` grown by MARGIN voxels, clipped to `shape`; None if empty."""
    found = mask.nonzero()
    if len(found) == 0:
        return None
    low = (found.min(0).values - MARGIN).clamp(min=0)
    high = torch.minimum(found.max(0).values + MARGIN + 1, torch.tensor(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))
