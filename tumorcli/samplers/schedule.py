"""The noise schedule every sampler shares, and the small base class the samplers build on.

Forward process: x_t = alpha_t·x0 + sigma_t·eps with alpha_t = sqrt(alpha_bar_t),
sigma_t = sqrt(1 − alpha_bar_t), for integer timesteps t = 0 … T−1. The schedule is stored in
float64 and cast to the input's dtype and device where it is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("linear", "scaled_linear", "cosine")
PREDICTIONS = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value to compare
class NoiseSchedule:
    """betas and alphas_cumprod (alpha_bar), both (T,) float64 on the CPU."""

    kind: str
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @staticmethod
    def make(kind: str = "linear", steps: int = 1000, beta_start: float = 1e-4,
             beta_end: float = 0.02) -> "NoiseSchedule":
        """A schedule of `steps` training timesteps. linear: betas evenly spaced; scaled_linear:
        sqrt(betas) evenly spaced; cosine: Nichol & Dhariwal 2021 (beta_* unused), betas ≤ 0.999."""
        if kind not in KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}; expected one of {KINDS}")
        if steps < 1:
            raise ValueError(f"a schedule needs at least 1 step, got {steps}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"expected 0 < beta_start <= beta_end < 1, "
                             f"got {beta_start} and {beta_end}")
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        elif kind == "scaled_linear":
            root_betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps,
                                        dtype=torch.float64)
            betas = root_betas ** 2
        else:
            offset = 0.008  # keeps beta_0 from vanishing (Nichol & Dhariwal, section 3.2)
            fraction = torch.arange(steps + 1, dtype=torch.float64) / steps
            f = torch.cos((fraction + offset) / (1 + offset) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        return NoiseSchedule(kind, betas, torch.cumprod(1 - betas, dim=0))

    @property
    def steps(self) -> int:
        """T, the number of training timesteps."""
        return len(self.betas)

    def alpha_bar_at(self, t: int) -> float:
        """alpha_bar_t as a Python float (float64); t = −1 stands for the clean sample (1.0)."""
        if t == -1:
            return 1.0
        self._check(torch.as_tensor(t))
        return float(self.alphas_cumprod[t])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """x_t = alpha_t·x0 + sigma_t·noise. x0, noise: (B, ...); t: int or LongTensor (B,)."""
        return self._alpha(t, x0) * x0 + self._sigma(t, x0) * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """The v-prediction target v = alpha_t·noise − sigma_t·x0; shapes as in add_noise."""
        return self._alpha(t, x0) * noise - self._sigma(t, x0) * x0

    def predicted_x0_and_eps(self, model_output: torch.Tensor, x_t: torch.Tensor, t,
                             prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) from a model that predicts `prediction` (one of PREDICTIONS)
        at x_t; model_output and x_t (B, ...), t an int or LongTensor (B,)."""
        alpha, sigma = self._alpha(t, x_t), self._sigma(t, x_t)
        if prediction == "epsilon":
            return (x_t - sigma * model_output) / alpha, model_output
        if prediction == "v_prediction":
            return alpha * x_t - sigma * model_output, sigma * x_t + alpha * model_output
        if prediction == "sample":
            return model_output, (x_t - alpha * model_output) / sigma
        raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")

    def timesteps_for(self, n: int, start: int | None = None) -> torch.Tensor:
        """n evenly spaced timesteps from `start` (default T−1) down to 0: LongTensor (n,),
        descending. start < T−1 refines a prior noised to that timestep (SDEdit)."""
        start = self.steps - 1 if start is None else int(start)
        if not 0 <= start < self.steps:
            raise ValueError(f"start must be a timestep in 0..{self.steps - 1}, got {start}")
        if not 1 <= n <= start + 1:
            raise ValueError(f"n must be between 1 and start + 1 = {start + 1}, got {n}")
        return torch.linspace(start, 0, n, dtype=torch.float64).round().long()

    def _check(self, t: torch.Tensor) -> None:
        if bool((t < 0).any()) or bool((t >= self.steps).any()):
            raise ValueError(f"timesteps must lie in 0..{self.steps - 1}, got {t.tolist()}")

    def _at(self, values: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
        """values[t] in like's dtype and device, shaped (B, 1, ..., 1) or () to broadcast."""
        t = torch.as_tensor(t, dtype=torch.long)
        self._check(t)
        picked = values.to(t.device)[t]
        if picked.ndim == 1:
            picked = picked.reshape(-1, *([1] * (like.ndim - 1)))
        return picked.to(device=like.device, dtype=like.dtype)

    def _alpha(self, t, like: torch.Tensor) -> torch.Tensor:
        return self._at(self.alphas_cumprod.sqrt(), t, like)

    def _sigma(self, t, like: torch.Tensor) -> torch.Tensor:
        return self._at((1 - self.alphas_cumprod).sqrt(), t, like)
