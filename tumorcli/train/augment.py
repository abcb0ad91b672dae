"""Scanner augmentation for segmentation patches: each modality on its own gets a random smooth
bias field, a gamma (contrast) change, Gaussian noise and an intensity scale and shift (MONAI's
RandBiasField, RandAdjustContrast, RandGaussianNoise, RandScaleIntensity, RandShiftIntensity;
Isensee et al. and the BraTS study used the last two).

The net sees images z-scored over the brain, image = (input − mean) / sd, but a bias field
multiplies the scanner's input. So the field is applied where it acts: input/sd = image +
mean/sd ("offset", kept per channel when a case is loaded), times the field, minus the offset.
Voxels outside the brain are 0 in the net's input and stay 0.

Every draw comes from the caller's numpy Generator, so a training step's patches are a pure
function of (seed, step, rank) as before and a resumed run sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScannerAugment:
    """Probabilities and ranges per channel (one draw per modality, not one per patch)."""

    bias_p: float = 0.6
    # Legendre coefficients, degree 3, zero-centred: log-field sd ≈ 0.2 over a 64³ patch (max
    # ±1), as strong as the synthesiser's strongest scanner (0.1–0.3 over the head). MONAI's
    # default (0, 0.1) is all-positive: a field that mostly brightens the patch corners.
    bias_coeff: tuple[float, float] = (-0.2, 0.2)
    gamma_p: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_p: float = 0.2
    noise_sd: float = 0.1                            # in brain sd units
    scale_p: float = 0.8
    scale: float = 0.1                               # × (1 ± 0.1)
    shift_p: float = 0.8
    shift: float = 0.1                               # ± 0.1 brain sd

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}


def augment_channels(image: np.ndarray, offsets: np.ndarray, rng: np.random.Generator,
                     settings: ScannerAugment = ScannerAugment()) -> np.ndarray:
    """(C, X, Y, Z) float32 z-scored patch, (C,) mean/sd per channel -> augmented copy."""
    from monai.transforms import (RandAdjustContrast, RandBiasField, RandGaussianNoise,
                                  RandScaleIntensity, RandShiftIntensity)

    out = np.array(image, dtype=np.float32)
    inside = out != 0
    for c in range(out.shape[0]):
        channel = out[c:c + 1]
        transforms = (
            (RandBiasField(degree=3, coeff_range=settings.bias_coeff, prob=settings.bias_p),
             float(offsets[c])),
            (RandAdjustContrast(prob=settings.gamma_p, gamma=settings.gamma), None),
            (RandGaussianNoise(prob=settings.noise_p, std=settings.noise_sd), None),
            (RandScaleIntensity(factors=settings.scale, prob=settings.scale_p), None),
            (RandShiftIntensity(offsets=settings.shift, prob=settings.shift_p), None),
        )
        for transform, offset in transforms:
            transform.set_random_state(seed=int(rng.integers(2**31)))
            if offset is None:
                channel = np.asarray(transform(channel), dtype=np.float32)
            else:   # the field multiplies the scanner's signal, not the z-score
                channel = np.asarray(transform(channel + offset), dtype=np.float32) - offset
        out[c] = np.where(inside[c], channel[0], 0.0)
    return out
