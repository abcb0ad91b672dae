"""Losses and draw odds shared by the diffusion trainings (predict-post, growth): a noise-target
MSE weighted towards the tumour (TaDiff's tumour-weighted ε-MSE), a soft Dice, and the per-slice
probabilities that balance classes and favour slices with tumour.
"""

from __future__ import annotations

import numpy as np
import torch


def weighted_mse(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 tumour_weight: float, dilate: int = 2) -> torch.Tensor:
    """Mean of w·(output − target)² / mean(w), w = 1 + tumour_weight inside `mask` dilated by
    `dilate` pixels (B, 1, h, w; values in [0, 1]); tumour_weight 0 is the plain MSE."""
    squared = (output - target).pow(2)
    if tumour_weight <= 0:
        return squared.mean()
    near = torch.nn.functional.max_pool2d(mask, 2 * dilate + 1, stride=1, padding=dilate) > 0
    weight = 1 + tumour_weight * near.to(squared.dtype)
    return (squared * weight).mean() / weight.mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice of sigmoid(logits) against a binary target (B, 1, H, W), over the batch."""
    probability = torch.sigmoid(logits)
    overlap = (probability * target).sum()
    return 1 - (2 * overlap + eps) / (probability.sum() + target.sum() + eps)


def slice_odds(classes: torch.Tensor, mask: torch.Tensor, balance_classes: bool,
               tumour_share: float) -> np.ndarray:
    """Probability of drawing each of the K slices (sums to 1). balance_classes: every class
    (K,) gets the same total; tumour_share > 0: that share of the draws, within each class, goes
    to slices whose mask (K, 1, h, w) holds tumour."""
    classes = np.asarray(classes)
    has_tumour = np.asarray(mask.flatten(1).amax(1) > 0)
    odds = np.ones(len(classes))
    for value in np.unique(classes):
        members = classes == value
        if 0 < tumour_share < 1 and (members & has_tumour).any() and (members & ~has_tumour).any():
            odds[members & has_tumour] = tumour_share / (members & has_tumour).sum()
            odds[members & ~has_tumour] = (1 - tumour_share) / (members & ~has_tumour).sum()
        else:
            odds[members] = 1 / members.sum()
        odds[members] *= 1 if balance_classes else members.sum() / len(classes)
    return odds / odds.sum()
