"""Diffusion samplers shared by every diffusion model; one sampler per file.

Every sampler has the same small interface (as in diffusers), so a model never knows which
sampler drives it:

    sampler = make_sampler("dpmpp", NoiseSchedule.make("cosine"), prediction="v_prediction")
    sampler.set_timesteps(20)                  # or set_timesteps(20, start=t') to refine a prior
    x = torch.randn(shape, generator=g)        # or sampler.add_noise(prior, noise, t')
    for t in sampler.timesteps:                # descending LongTensor
        x = sampler.step(model(x, t), int(t), x, generator=g)
    # after the last timestep, step returns the clean estimate x0_hat

prediction says what the network outputs: "epsilon" (the noise), "v_prediction"
(v = alpha·eps − sigma·x0) or "sample" (x0). Tensors may have any shape (B, ...), dtype and
device; the schedule stays float64 and is cast where it is used. Samplers never import networks.
"""

from __future__ import annotations

from tumorcli.samplers.ddim import DDIMSampler
from tumorcli.samplers.ddpm import DDPMSampler
from tumorcli.samplers.dpm_solver import DPMSolverPPSampler
from tumorcli.samplers.base import Sampler
from tumorcli.samplers.schedule import PREDICTIONS, NoiseSchedule

SAMPLERS = ("ddpm", "ddim", "dpmpp")
_CLASSES = {"ddpm": DDPMSampler, "ddim": DDIMSampler, "dpmpp": DPMSolverPPSampler}

__all__ = ["SAMPLERS", "PREDICTIONS", "NoiseSchedule", "Sampler", "DDPMSampler", "DDIMSampler",
           "DPMSolverPPSampler", "make_sampler"]


def make_sampler(name: str, schedule: NoiseSchedule, prediction: str = "epsilon",
                 **options) -> Sampler:
    """The sampler called `name` (one of SAMPLERS); options go to its constructor
    (clip for all, eta for ddim)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLERS}")
    return _CLASSES[name](schedule, prediction, **options)
