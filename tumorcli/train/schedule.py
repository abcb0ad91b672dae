"""Learning rate as a pure function of the step: linear warm-up, then cosine decay."""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int,
          final_fraction: float = 0.01) -> float:
    """lr for 0-based `step`: base·(step+1)/warmup during warm-up, then a cosine from base to
    base·final_fraction at the last step."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer, step: int, total_steps: int, base_lr: float, warmup_steps: int) -> None:
    """Every parameter group of `optimizer` to lr_at(step, ...)."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, total_steps, base_lr, warmup_steps)
