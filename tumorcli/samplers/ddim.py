"""DDIM (Song et al. 2021): deterministic at eta = 0, DDPM-like noise at eta = 1."""

from __future__ import annotations

import math

import torch

from tumorcli.samplers.base import Sampler
from tumorcli.samplers.schedule import NoiseSchedule


class DDIMSampler(Sampler):
    """x_{t_prev} = alpha_{t_prev}·x0_hat + sqrt(1 − alpha_bar_{t_prev} − c²)·eps_hat + c·noise,
    c = eta·sqrt(beta·(1 − alpha_bar_{t_prev}) / (1 − alpha_bar_t)) (Song et al.'s sigma), where
    beta = 1 − alpha_bar_t / alpha_bar_{t_prev} is the strided step's beta.

    eta = 0 is the first-order solver of the probability-flow ODE. clip: clamp x0_hat to
    [−clip, clip] (eps_hat follows it).
    """

    def __init__(self, schedule: NoiseSchedule, prediction: str = "epsilon", eta: float = 0.0,
                 clip: float | None = None) -> None:
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be between 0 (deterministic) and 1 (DDPM-like), got {eta}")
        self.eta = eta
        super().__init__(schedule, prediction, clip)

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x at the next timestep (x0_hat after the last). model_output, x_t: (B, ...);
        t: an entry of self.timesteps; generator: for the noise when eta > 0."""
        t_prev = self.previous_timestep(t)
        x0, eps = self.x0_and_eps(model_output, t, x_t)
        if t_prev == -1:
            return x0
        alpha_bar = self.schedule.alpha_bar_at(t)
        alpha_bar_prev = self.schedule.alpha_bar_at(t_prev)
        beta = 1 - alpha_bar / alpha_bar_prev  # the strided step's beta
        c = self.eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * beta)
        x_prev = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1 - alpha_bar_prev - c ** 2) * eps
        if c > 0:
            x_prev = x_prev + c * self.noise_like(x_t, generator)
        return x_prev
