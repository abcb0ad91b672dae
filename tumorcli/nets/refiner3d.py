"""The 3D DDPM refiner of `tumor segment --refine ddpm`: a 3D diffusion U-Net (MONAI's
DiffusionModelUNet) on patches (96³ in the study) that sees the noisy label map ⊕ the MR channels
⊕ the coarse prior and predicts the clean label map x0 as logits (x0-parameterisation, so the
loss can be DiceCE + an edge-weighted L2 on softmax(x0_hat)). No sampling here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from torch import nn


@dataclass(frozen=True)
class Refiner3DConfig:
    patch: int = 96
    mask_channels: int = 4                   # one-hot labels (background, NETC, SNFH, ET)
    condition_channels: int = 8              # 4 modalities + 4 coarse-prior probabilities
    channels: tuple[int, ...] = (32, 64, 128)
    attention: tuple[bool, ...] = (False, False, True)
    res_blocks: int = 1
    head_channels: int = 32
    groups: int = 16

    def to_dict(self) -> dict:
        return {"kind": "refiner", "architecture": "ddpm3d", **asdict(self)}

    @staticmethod
    def from_dict(data: dict) -> "Refiner3DConfig":
        known = {f.name for f in fields(Refiner3DConfig)}
        return Refiner3DConfig(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in known})


def build_refiner3d(config: Refiner3DConfig) -> nn.Module:
    """forward(cat([noisy_mask, condition], 1), t) -> x0 logits (B, mask_channels, D, H, W)."""
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(spatial_dims=3,
                              in_channels=config.mask_channels + config.condition_channels,
                              out_channels=config.mask_channels, channels=config.channels,
                              attention_levels=config.attention,
                              num_res_blocks=config.res_blocks,
                              num_head_channels=config.head_channels,
                              norm_num_groups=config.groups)
