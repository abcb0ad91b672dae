"""The latent diffusion model of `tumor predict-post` (after Leclercq et al.): a 2D autoencoder
for axial T1c slices and a latent U-Net denoiser conditioned on the pre-treatment latent and the
tumour mask (concatenated) and on the survival class (a class embedding; class 0 = no class, for
classifier-free guidance). MONAI's AutoencoderKL and DiffusionModelUNet; no sampling here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from torch import nn

SURVIVAL_CLASSES = ("none", "short", "long")  # class index 0 is the unconditional class


@dataclass(frozen=True)
class AutoencoderConfig:
    channels: tuple[int, ...] = (16, 32, 64)   # image size / latent size = 2 ** (levels − 1)
    latent_channels: int = 4
    res_blocks: int = 1
    norm_groups: int = 16

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class DenoiserConfig:
    channels: tuple[int, ...] = (32, 64, 64)
    attention: tuple[bool, ...] = (False, False, True)
    res_blocks: int = 1
    head_channels: int = 32
    norm_groups: int = 16


@dataclass(frozen=True)
class PostModelConfig:
    """Everything `tumor predict-post` needs to rebuild and drive the model (config.json)."""

    spacing_mm: float = 2.0            # slices are resampled to this in-plane (and slice) spacing
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    denoiser: DenoiserConfig = DenoiserConfig()
    schedule: str = "scaled_linear"
    train_steps: int = 1000
    prediction: str = "v_prediction"
    latent_scale: float = 1.0          # latents × scale have unit variance (set after stage 1)
    target: str = "post"               # what is diffused: the post latent, or residual: post − pre
    target_scale: float = 1.0          # the diffused target × this has unit variance (residual)
    intensity: str = "tissue"          # model units: tissue (÷ normal-tissue median) | zscore
    # the output is the model's within margin_mm of the pre mask, and beyond margin + ramp the
    # model's plus the pre scan's own detail (what the autoencoder and the 2 mm grid lose);
    # None: the model's everywhere
    detail_margin_mm: float | None = 0.0   # chosen on the val patients (0/5/10/20/40 mm)
    detail_ramp_mm: float = 10.0
    class_channel: bool = False        # the class also as an input plane (class_plane)

    @property
    def pad_multiple(self) -> int:
        """Slice sides are padded to a multiple of this (the autoencoder and U-Net downsample)."""
        return self.autoencoder.factor * 2 ** (len(self.denoiser.channels) - 1)

    def to_dict(self) -> dict:
        return {"kind": "predict-post", "architecture": "ldm-autoencoderkl-unet2d",
                **asdict(self)}

    @staticmethod
    def from_dict(data: dict) -> "PostModelConfig":
        def build(cls, values: dict):
            known = {f.name for f in fields(cls)}
            return cls(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in values.items() if k in known})

        top = {k: v for k, v in data.items() if k in {f.name for f in fields(PostModelConfig)}}
        top.setdefault("intensity", "zscore")   # models written before "tissue" existed
        top.setdefault("detail_margin_mm", None)
        top["autoencoder"] = build(AutoencoderConfig, data.get("autoencoder", {}))
        top["denoiser"] = build(DenoiserConfig, data.get("denoiser", {}))
        return PostModelConfig(**top)


def build_autoencoder(config: AutoencoderConfig) -> nn.Module:
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1,
                         channels=config.channels, latent_channels=config.latent_channels,
                         num_res_blocks=config.res_blocks, norm_num_groups=config.norm_groups,
                         attention_levels=(False,) * len(config.channels),
                         with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)


def build_denoiser(config: PostModelConfig) -> nn.Module:
    """Input: noisy post latent ⊕ pre latent ⊕ tumour mask at latent size (⊕ class_plane with
    class_channel); output: the `prediction` target for the post latent; class_labels index
    SURVIVAL_CLASSES."""
    from monai.networks.nets import DiffusionModelUNet

    latent = config.autoencoder.latent_channels
    return DiffusionModelUNet(spatial_dims=2, in_channels=2 * latent + 1 + config.class_channel,
                              out_channels=latent,
                              channels=config.denoiser.channels,
                              attention_levels=config.denoiser.attention,
                              num_res_blocks=config.denoiser.res_blocks,
                              num_head_channels=config.denoiser.head_channels,
                              norm_num_groups=config.denoiser.norm_groups,
                              num_class_embeds=len(SURVIVAL_CLASSES))


def class_plane(labels, like):
    """(B, 1, h, w) input plane of the survival class: +1 short, −1 long, 0 none (dropped), so
    the class reaches every convolution and not only the embedding; `like` gives h, w."""
    import torch

    sign = torch.tensor([0.0, 1.0, -1.0], device=labels.device)[labels]
    return sign.view(-1, 1, 1, 1).expand(-1, 1, *like.shape[-2:]).to(like.dtype)
