"""The denoiser of `tumor predict-growth` (after TaDiff, Liu et al., IEEE TMI 2025): a 2D pixel
U-Net (MONAI DiffusionModelUNet) over axial slices. Input: the noisy target change (t1n, t1c,
t2f of the future session minus the last source session) ⊕ the three source sessions' t1n, t1c,
t2f and whole-tumour masks; output: the prediction target for the change (v or ε) ⊕ the logit
of the future whole-tumour mask. The acquisition days and the treatments condition every block:
a sinusoidal embedding of each day and the treatments' multi-hot flags, through an MLP, added to
the diffusion-timestep embedding (in place of MONAI's class embedding). No sampling here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

MODALITIES = ("t1n", "t1c", "t2f")
TREATMENTS = ("surgery", "rt", "tmz")
SOURCES = 3
WEIGHTS = "growth.safetensors"   # the model folder's weights file
# the condition vector: the days of the three sources relative to the last one, the target's
# day relative to it, the last source's day since diagnosis, then one multi-hot per session
DAY_VALUES = SOURCES + 2
CONDITION_SIZE = DAY_VALUES + (SOURCES + 1) * len(TREATMENTS)


@dataclass(frozen=True)
class GrowthConfig:
    """Everything `tumor predict-growth` needs to rebuild and drive the model (config.json)."""

    spacing_mm: float = 2.0
    channels: tuple[int, ...] = (32, 64, 64)
    attention: tuple[bool, ...] = (False, False, True)
    res_blocks: int = 1
    head_channels: int = 32
    norm_groups: int = 16
    day_features: int = 16            # sinusoid features per day value
    max_period_days: float = 2000.0   # the slowest sinusoid's period
    schedule: str = "scaled_linear"
    train_steps: int = 1000
    prediction: str = "v_prediction"
    change_scale: float = 1.0         # the diffused change × this has unit sd (set from data)
    # the mask logit is the net's output + mask_prior · (2·last mask − 1): persistence (the last
    # observed mask) is the starting point and the net learns where the tumour changes; 0: the
    # net's output alone
    mask_prior: float = 0.0

    @property
    def pad_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return {"kind": "growth", "architecture": "tadiff-unet2d", **asdict(self)}

    @staticmethod
    def from_dict(data: dict) -> "GrowthConfig":
        known = {f.name for f in fields(GrowthConfig)}
        return GrowthConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in data.items() if k in known})


def treatment_flags(text: str) -> tuple[float, ...]:
    """"surgery+rt+tmz" / "tmz" / "none" / "" → multi-hot over TREATMENTS; ValueError names an
    unknown word."""
    words = {w.strip().lower() for w in text.replace(",", "+").split("+")} - {"", "none"}
    unknown = words - set(TREATMENTS)
    if unknown:
        raise ValueError(f"unknown treatment {sorted(unknown)[0]!r}; expected "
                         + ", ".join(TREATMENTS) + " joined by '+', or none")
    return tuple(float(name in words) for name in TREATMENTS)


def condition_vector(days: list[float], treatments: list[str], target_day: float,
                     target_treatment: str) -> torch.Tensor:
    """(CONDITION_SIZE,) float32 for three source days and treatments and the target's."""
    last = days[-1]
    values = [d - last for d in days] + [target_day - last, last]
    flags = [f for text in [*treatments, target_treatment] for f in treatment_flags(text)]
    return torch.tensor(values + flags, dtype=torch.float32)


class GrowthCondition(nn.Module):
    """(B, CONDITION_SIZE) days and flags → (B, dim): sinusoids of each day, then an MLP."""

    def __init__(self, dim: int, day_features: int, max_period_days: float) -> None:
        super().__init__()
        half = day_features // 2
        periods = torch.logspace(0, math.log10(max_period_days), half)
        self.register_buffer("frequencies", 2 * math.pi / periods, persistent=False)
        size = DAY_VALUES * 2 * half + (SOURCES + 1) * len(TREATMENTS)
        self.mlp = nn.Sequential(nn.Linear(size, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        days, flags = condition[:, :DAY_VALUES], condition[:, DAY_VALUES:]
        angles = days[..., None] * self.frequencies
        features = torch.cat([angles.sin(), angles.cos()], -1).flatten(1)
        return self.mlp(torch.cat([features, flags], 1).to(self.mlp[0].weight.dtype))


def mask_logits(output, last_mask, prior: float):
    """The future mask's logits from the net's mask output and the last source's mask (any
    matching shapes, tensors or arrays)."""
    return output + prior * (2 * last_mask - 1)


def build_growth_net(config: GrowthConfig) -> nn.Module:
    """Call as net(x, t, class_labels=condition) with x (B, 3 + 3·4, H, W): the noisy change,
    then per source t1n, t1c, t2f, mask; returns (B, 3 + 1, H, W)."""
    from monai.networks.nets import DiffusionModelUNet

    channels = len(MODALITIES)
    net = DiffusionModelUNet(spatial_dims=2, in_channels=channels + SOURCES * (channels + 1),
                             out_channels=channels + 1, channels=config.channels,
                             attention_levels=config.attention,
                             num_res_blocks=config.res_blocks,
                             num_head_channels=config.head_channels,
                             norm_num_groups=config.norm_groups, num_class_embeds=1)
    net.class_embedding = GrowthCondition(config.channels[0] * 4, config.day_features,
                                          config.max_period_days)
    return net
