"""Exponential moving average of a net's weights (the weights diffusion models ship with)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """shadow ← decay·shadow + (1 − decay)·weights after each optimiser step; `net` is the
    shadow copy (eval mode, no gradients)."""

    def __init__(self, net: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for shadow, current in zip(self.net.state_dict().values(), net.state_dict().values()):
            if shadow.is_floating_point():
                shadow.lerp_(current.detach(), 1 - self.decay)
            else:
                shadow.copy_(current)
