"""DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver of the
probability-flow ODE in its data-prediction form, stepping in lambda = log(alpha / sigma)."""

from __future__ import annotations

import math

import torch

from tumorcli.samplers.base import Sampler


class DPMSolverPPSampler(Sampler):
    """With h = lambda_{t_prev} − lambda_t, one step is
    x_{t_prev} = (sigma_{t_prev} / sigma_t)·x_t − alpha_{t_prev}·(e^{−h} − 1)·D,
    D = x0_hat (first order) or x0_hat + (x0_hat − x0_hat_last) / (2r) with r = h_last / h
    (second order, reusing the previous step's x0_hat). The first step, the step into the last
    timestep and the read-out after it (x0_hat itself) are first order ("lower_order_final").
    clip: clamp x0_hat to [−clip, clip].
    """

    def set_timesteps(self, n: int, start: int | None = None) -> None:
        """As Sampler.set_timesteps; also forgets the previous step's x0_hat."""
        super().set_timesteps(n, start)
        self.last: tuple[int, torch.Tensor] | None = None  # (t, x0_hat) of the previous step

    def lambda_at(self, t: int) -> float:
        """lambda_t = log(alpha_t / sigma_t), half the log signal-to-noise ratio."""
        alpha_bar = self.schedule.alpha_bar_at(t)
        return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x at the next timestep (x0_hat after the last). model_output, x_t: (B, ...);
        t: an entry of self.timesteps; generator: unused (the solver is deterministic)."""
        index = self.index_of(t)
        t_prev = self.previous_timestep(t)
        x0, _ = self.x0_and_eps(model_output, t, x_t)
        last, self.last = self.last, (int(t), x0)
        if t_prev == -1:
            return x0
        alpha_bar_prev = self.schedule.alpha_bar_at(t_prev)
        sigma = math.sqrt(1 - self.schedule.alpha_bar_at(t))
        sigma_prev = math.sqrt(1 - alpha_bar_prev)
        h = self.lambda_at(t_prev) - self.lambda_at(t)
        data = x0
        # into the last timestep lambda jumps (to ~5 at t = 0) and extrapolating x0_hat overshoots
        has_history = last is not None and last[0] == int(self.timesteps[index - 1])
        if 0 < index < len(self.timesteps) - 2 and has_history:
            r = (self.lambda_at(t) - self.lambda_at(last[0])) / h
            data = x0 + (x0 - last[1]) / (2 * r)
        return (sigma_prev / sigma) * x_t - math.sqrt(alpha_bar_prev) * math.expm1(-h) * data
