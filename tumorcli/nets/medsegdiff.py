"""MedSegDiff (Wu et al. 2023) for 2D slices: a diffusion U-Net that denoises a segmentation
while an image encoder, fed the MR channels and the coarse prior, conditions every encoder level.

Two pieces make it MedSegDiff rather than a plain conditional U-Net:
- FF-Parser: a learnable complex filter on the 2D Fourier transform of the segmentation
  features, which lets the net damp the high-frequency noise of early diffusion steps;
- dynamic conditional encoding: at each level the condition features c modulate the filtered
  segmentation features s as s + (LN(c) ⊙ LN(FF(s))) ⊙ c (an attention-like gate).
The net predicts the noise ε (the refiner samples with DDIM / DPM-Solver++); no sampling here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn


@dataclass(frozen=True)
class MedSegDiffConfig:
    size: int = 128                         # slices are square, size × size
    mask_channels: int = 4                  # one-hot labels (background, NETC, SNFH, ET)
    condition_channels: int = 8             # 4 modalities + 4 coarse-prior probabilities
    channels: tuple[int, ...] = (32, 64, 128, 128)
    groups: int = 8

    def to_dict(self) -> dict:
        return {"kind": "refiner", "architecture": "medsegdiff", **asdict(self)}

    @staticmethod
    def from_dict(data: dict) -> "MedSegDiffConfig":
        known = {f.name for f in fields(MedSegDiffConfig)}
        return MedSegDiffConfig(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in data.items() if k in known})


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sinusoidal features (as in DDPM)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FFParser(nn.Module):
    """x -> irfft2(W ⊙ rfft2(x)) with a learnable complex W per channel and frequency,
    initialised to 1 (the identity)."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, height, width // 2 + 1, 2))
        with torch.no_grad():
            self.weight[..., 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")
        filtered = spectrum * torch.view_as_complex(self.weight)
        return torch.fft.irfft2(filtered, s=x.shape[-2:], norm="ortho").to(x.dtype)


class ConditionalEncoding(nn.Module):
    """s + (LN(c) ⊙ LN(FF(s))) ⊙ c, LayerNorm over channels at each pixel."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.parser = FFParser(channels, size, size)
        self.norm_condition = nn.GroupNorm(1, channels)
        self.norm_segmentation = nn.GroupNorm(1, channels)

    def forward(self, segmentation: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        gate = self.norm_condition(condition) * self.norm_segmentation(self.parser(segmentation))
        return segmentation + gate * condition


class ResBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm/SiLU, the time embedding as scale and shift."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels \
            else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.norm2(h)
        if time is not None:
            scale, shift = self.time(time)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(nn.functional.silu(h))


class MedSegDiff(nn.Module):
    """forward(noisy_mask (B, K, S, S), t (B,), condition (B, C, S, S)) -> ε (B, K, S, S)."""

    def __init__(self, config: MedSegDiffConfig) -> None:
        super().__init__()
        widths, groups = config.channels, config.groups
        time_dim = 4 * widths[0]
        self.config = config
        self.time = nn.Sequential(nn.Linear(widths[0], time_dim), nn.SiLU(),
                                  nn.Linear(time_dim, time_dim))
        self.mask_in = nn.Conv2d(config.mask_channels, widths[0], 3, padding=1)
        self.condition_in = nn.Conv2d(config.condition_channels, widths[0], 3, padding=1)
        self.mask_down, self.condition_down, self.fuse = (nn.ModuleList() for _ in range(3))
        previous = widths[0]
        for level, width in enumerate(widths):
            self.mask_down.append(ResBlock(previous, width, time_dim, groups))
            self.condition_down.append(ResBlock(previous, width, 1, groups))
            self.fuse.append(ConditionalEncoding(width, config.size // 2 ** level))
            previous = width
        self.middle = ResBlock(widths[-1], widths[-1], time_dim, groups)
        self.up = nn.ModuleList(ResBlock(2 * width, next_width, time_dim, groups)
                                for width, next_width in zip(widths[::-1], widths[::-1][1:]
                                                             + widths[:1]))
        self.out = nn.Sequential(nn.GroupNorm(groups, widths[0]), nn.SiLU(),
                                 nn.Conv2d(widths[0], config.mask_channels, 3, padding=1))

    def forward(self, noisy_mask: torch.Tensor, t: torch.Tensor,
                condition: torch.Tensor) -> torch.Tensor:
        time = self.time(timestep_embedding(t, self.config.channels[0]))
        h, c = self.mask_in(noisy_mask), self.condition_in(condition)
        skips = []
        for level, (mask_block, condition_block, fuse) in enumerate(
                zip(self.mask_down, self.condition_down, self.fuse)):
            if level:
                h, c = nn.functional.avg_pool2d(h, 2), nn.functional.avg_pool2d(c, 2)
            c = condition_block(c, None)
            h = fuse(mask_block(h, time), c)
            skips.append(h)
        h = self.middle(h, time)
        for level, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), time)
            if skips:
                h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
        return self.out(h)
