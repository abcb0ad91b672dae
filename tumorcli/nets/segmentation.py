"""Segmentation networks: MONAI's residual 3D U-Net and Swin-UNETR, built from a config.

Both take the four co-registered modalities (t1n, t1c, t2w, t2f) as channels and return one
logit per BraTS region (TC, WT, ET), read with a sigmoid each. Regions rather than a softmax over
labels because BraTS is scored on the nested regions, which overlap (ET ⊂ TC ⊂ WT): a sigmoid per
region optimises exactly what is scored (nnU-Net's region-based BraTS training, MONAI's BraTS
tutorial). Labels come back by nesting: WT → 2 SNFH, TC → 1 NETC, ET → 3 ET.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

ARCHITECTURES = ("resunet", "swinunetr")
MODALITIES = ("t1n", "t1c", "t2w", "t2f")
REGIONS = ("TC", "WT", "ET")


@dataclass(frozen=True)
class SegNetConfig:
    """What a segmentation model is: its net, its input and its output. Saved as config.json.

    spacing_mm: the isotropic voxel size the net works at (inputs are resampled to it);
    patch: the sliding-window / training patch in voxels at that spacing.
    channels: Res U-Net channels per level; feature_size/depths/heads/window: Swin-UNETR sizes
    (the study's Swin-UNETR: feature_size 48, depths 2-2-2-2, heads 3-6-12-24, window 7).
    window 4 divides the 32³ tokens of a 64³ patch (no padding) and is 2.5× faster on a CPU.
    """

    architecture: str = "resunet"
    spacing_mm: float = 2.0
    patch: tuple[int, int, int] = (64, 64, 64)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    residual_units: int = 2
    feature_size: int = 12
    depths: tuple[int, ...] = (2, 2, 2, 2)
    heads: tuple[int, ...] = (3, 6, 12, 24)
    window: int = 7
    dropout: float = 0.0
    modalities: tuple[str, ...] = MODALITIES
    regions: tuple[str, ...] = REGIONS
    normalisation: str = "zscore-brain"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": "segmentation", **asdict(self)}

    @staticmethod
    def from_dict(data: dict) -> "SegNetConfig":
        known = {f.name for f in fields(SegNetConfig)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return SegNetConfig(**values)


def build_segnet(config: SegNetConfig) -> nn.Module:
    """The network a config describes (random weights)."""
    in_channels, out_channels = len(config.modalities), len(config.regions)
    if config.architecture == "resunet":
        from monai.networks.nets import UNet

        return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                    channels=config.channels, strides=(2,) * (len(config.channels) - 1),
                    num_res_units=config.residual_units, norm="instance",
                    dropout=config.dropout)
    if config.architecture == "swinunetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=in_channels, out_channels=out_channels,
                         feature_size=config.feature_size, depths=config.depths,
                         num_heads=config.heads, window_size=config.window,
                         drop_rate=config.dropout, spatial_dims=3)
    raise ValueError(f"unknown architecture {config.architecture!r}; expected {ARCHITECTURES}")


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def labels_from_regions(regions: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(3, X, Y, Z) TC/WT/ET probabilities -> (X, Y, Z) uint8 BraTS labels (nested)."""
    tc, wt, et = (regions[i] >= threshold for i in range(3))
    labels = torch.zeros(regions.shape[1:], dtype=torch.uint8, device=regions.device)
    labels[wt] = 2
    labels[tc] = 1
    labels[et] = 3
    return labels


def regions_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """(..., X, Y, Z) BraTS labels -> (..., 3, X, Y, Z) float TC/WT/ET indicators."""
    tc = (labels == 1) | (labels == 3)
    wt = labels > 0
    et = labels == 3
    return torch.stack([tc, wt, et], dim=-4).float()


def classes_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, *spatial) BraTS labels 0–3 -> (B, 4, *spatial) float one-hot over background, NETC,
    SNFH, ET (label value = channel)."""
    return torch.nn.functional.one_hot(labels.long().clamp(0, 3), 4).movedim(-1, 1).float()


def classes_from_regions(regions: torch.Tensor) -> torch.Tensor:
    """(..., 3, X, Y, Z) TC/WT/ET probabilities -> (..., 4, X, Y, Z) probabilities of
    background, NETC, SNFH, ET (made nested first: ET ≤ TC ≤ WT), summing to 1."""
    tc, wt, et = regions.unbind(-4)
    tc = torch.maximum(tc, et)
    wt = torch.maximum(wt, tc)
    return torch.stack([1 - wt, tc - et, wt - tc, et], dim=-4)


def regions_from_classes(classes: torch.Tensor) -> torch.Tensor:
    """(..., 4, X, Y, Z) background/NETC/SNFH/ET probabilities -> (..., 3, ...) TC/WT/ET."""
    background, netc, snfh, et = classes.unbind(-4)
    return torch.stack([netc + et, 1 - background, et], dim=-4)
