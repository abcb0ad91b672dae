"""What a diffusion refiner model is (config.json): which net (MedSegDiff 2D or the 3D DDPM
refiner), the noise schedule and what the net predicts, and the grid and inputs it shares with
the segmentation model whose prior it refines.

The label map lives in diffusion space as x0 = 2·one-hot − 1 over (background, NETC, SNFH, ET).
The condition is the four MR channels ⊕ the prior's four class probabilities; an all-zero prior
means "no prior" (the unconditional mode, learnt by dropping the prior during training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tumorcli.nets.medsegdiff import MedSegDiff, MedSegDiffConfig
from tumorcli.nets.refiner3d import Refiner3DConfig, build_refiner3d

# the study's choices: MedSegDiff linear schedule / ε; the 3D refiner cosine schedule / x0
DEFAULTS = {"medsegdiff": ("linear", "epsilon"), "ddpm": ("cosine", "sample")}


@dataclass(frozen=True)
class RefinerSpec:
    refiner: str                                   # medsegdiff | ddpm
    net: MedSegDiffConfig | Refiner3DConfig
    spacing_mm: float = 2.0
    modalities: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
    schedule: str = "linear"
    prediction: str = "epsilon"
    train_steps: int = 1000
    start: int = 300                               # default t′ the prior is noised to
    prior_model: str = ""

    @staticmethod
    def make(refiner: str, net, **values) -> "RefinerSpec":
        schedule, prediction = DEFAULTS[refiner]
        return RefinerSpec(refiner, net, schedule=schedule, prediction=prediction, **values)

    def to_dict(self) -> dict:
        return {"kind": "refiner", "refiner": self.refiner, "architecture": self.refiner,
                "spacing_mm": self.spacing_mm, "modalities": list(self.modalities),
                "schedule": self.schedule, "prediction": self.prediction,
                "train_steps": self.train_steps, "start": self.start,
                "prior_model": self.prior_model, "net": self.net.to_dict()}

    @staticmethod
    def from_dict(data: dict) -> "RefinerSpec":
        net_config = (MedSegDiffConfig if data["refiner"] == "medsegdiff" else Refiner3DConfig
                      ).from_dict(data["net"])
        return RefinerSpec(data["refiner"], net_config, float(data["spacing_mm"]),
                           tuple(data["modalities"]), data["schedule"], data["prediction"],
                           int(data["train_steps"]), int(data["start"]), data.get("prior_model", ""))

    @property
    def is_2d(self) -> bool:
        return self.refiner == "medsegdiff"

    def build(self) -> nn.Module:
        return MedSegDiff(self.net) if self.is_2d else build_refiner3d(self.net)

    def run(self, net: nn.Module, noisy: torch.Tensor, t: torch.Tensor,
            condition: torch.Tensor) -> torch.Tensor:
        """The net's raw output for noisy labels (B, 4, ...) at timesteps t (B,) given the
        condition (B, 8, ...): ε for MedSegDiff, x0 logits for the 3D refiner."""
        if self.is_2d:
            return net(noisy, t, condition)
        return net(torch.cat([noisy, condition], 1), t)

    def sampler_output(self, raw: torch.Tensor) -> torch.Tensor:
        """What the samplers take (`prediction`): ε as is; x0 logits as 2·softmax − 1."""
        return raw if self.prediction == "epsilon" else 2 * torch.softmax(raw.float(), 1) - 1


def plane_window(n: int, size: int, centre: int | None = None) -> tuple[slice, slice]:
    """How an axis of n voxels meets a 2D net's `size`: (source, target) slices. A shorter axis
    is zero-padded around the net's centre; a longer one is cropped to `size` voxels around
    `centre` (default: the axis centre), kept inside the axis. Training and refinement share
    it, so the net sees slices placed the same way in both."""
    if n <= size:
        return slice(0, n), slice((size - n) // 2, (size - n) // 2 + n)
    low = (n - size) // 2 if centre is None else min(max(centre - size // 2, 0), n - size)
    return slice(low, low + size), slice(0, size)


def fit_planes(planes, size: int):
    """(..., H, W) array or tensor -> (..., size, size) per `plane_window` (centred), and the
    (target) window of the result that holds the kept part of the input."""
    (source_h, target_h), (source_w, target_w) = (plane_window(n, size)
                                                  for n in planes.shape[-2:])
    shape = (*planes.shape[:-2], size, size)
    out = planes.new_zeros(shape) if torch.is_tensor(planes) else np.zeros(shape, planes.dtype)
    out[..., target_h, target_w] = planes[..., source_h, source_w]
    return out, (target_h, target_w)
