"""DDPM ancestral sampling (Ho et al. 2020), on all T timesteps or a strided subset."""

from __future__ import annotations

import math

import torch

from tumorcli.samplers.base import Sampler


class DDPMSampler(Sampler):
    """Draws x_{t_prev} from the forward-process posterior q(x_{t_prev} | x_t, x0_hat).

    Between strided timesteps t > t_prev the step behaves like one forward step with
    beta = 1 − alpha_bar_t / alpha_bar_{t_prev}; its posterior variance is the "small" one,
    beta·(1 − alpha_bar_{t_prev}) / (1 − alpha_bar_t). clip: clamp x0_hat to [−clip, clip].
    """

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x at the next timestep (x0_hat after the last). model_output, x_t: (B, ...);
        t: an entry of self.timesteps; generator: for the added noise."""
        t_prev = self.previous_timestep(t)
        x0, _ = self.x0_and_eps(model_output, t, x_t)
        if t_prev == -1:
            return x0
        alpha_bar = self.schedule.alpha_bar_at(t)
        alpha_bar_prev = self.schedule.alpha_bar_at(t_prev)
        beta = 1 - alpha_bar / alpha_bar_prev
        coef_x0 = math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)
        coef_x_t = math.sqrt(1 - beta) * (1 - alpha_bar_prev) / (1 - alpha_bar)
        sigma = math.sqrt(beta * (1 - alpha_bar_prev) / (1 - alpha_bar))
        return coef_x0 * x0 + coef_x_t * x_t + sigma * self.noise_like(x_t, generator)
