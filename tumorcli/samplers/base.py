"""What every sampler shares: the timestep grid, turning a model output into (x0_hat, eps_hat)
with optional clipping, and noise from a generator. Each sampler file adds only its `step`."""

from __future__ import annotations

import math

import torch

from tumorcli.samplers.schedule import PREDICTIONS, NoiseSchedule


class Sampler:
    """What DDPM, DDIM and DPM-Solver++ share: timesteps, the (x0_hat, eps_hat) of a model
    output with optional clipping of x0_hat to [−clip, clip], and add_noise.

    Subclasses implement step(model_output, t, x_t, generator=None) -> x at the next timestep,
    or the clean estimate x0_hat after the last one.
    """

    def __init__(self, schedule: NoiseSchedule, prediction: str = "epsilon",
                 clip: float | None = None) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
        self.schedule = schedule
        self.prediction = prediction
        self.clip = clip
        self.set_timesteps(schedule.steps)

    def set_timesteps(self, n: int, start: int | None = None) -> None:
        """Sample with n model calls from timestep `start` (default T−1); sets self.timesteps."""
        self.timesteps = self.schedule.timesteps_for(n, start)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """x_t from x0 and noise at timestep(s) t; see NoiseSchedule.add_noise."""
        return self.schedule.add_noise(x0, noise, t)

    def index_of(self, t: int) -> int:
        """Where t lies in self.timesteps (0 = the first, noisiest step)."""
        matches = (self.timesteps == int(t)).nonzero()
        if len(matches) == 0:
            raise ValueError(f"t={int(t)} is not one of the timesteps from set_timesteps: "
                             f"{self.timesteps.tolist()}")
        return int(matches[0])

    def previous_timestep(self, t: int) -> int:
        """The timestep after t in self.timesteps, or −1 (the clean sample) after the last."""
        index = self.index_of(t)
        return int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1

    def x0_and_eps(self, model_output: torch.Tensor, t: int,
                   x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) at timestep t; with clip, eps_hat is made consistent with the
        clipped x0_hat."""
        x0, eps = self.schedule.predicted_x0_and_eps(model_output, x_t, t, self.prediction)
        if self.clip is not None:
            alpha_bar = self.schedule.alpha_bar_at(t)
            x0 = x0.clamp(-self.clip, self.clip)
            eps = (x_t - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
        return x0, eps

    @staticmethod
    def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal noise shaped like x, drawn on the generator's device then moved,
        so a CPU generator gives the same noise whether x is on the CPU or a GPU."""
        device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
        return noise.to(x.device)
