"""MR images from tissue and tumour fractions: relaxation times, signal equations, scanner effects.

Each voxel is a mixture of tissue classes (partial volume); each class has T1, T2 and proton
density (3 T values, SIMULATOR_NOTES.md), jittered per subject. Signals:
    spin echo (t1n, t1c, t2w):  S = PD (1 - e^(-TR/T1)) e^(-TE/T2)
    FLAIR (t2f):                S = PD |1 - 2 e^(-TI/T1) + e^(-TR/T1)| e^(-TE/T2)
Gadolinium (t1c) shortens T1 where the blood–brain barrier leaks: 1/T1 = 1/T1₀ + r1 [Gd].
Then the scanner: a smooth multiplicative bias field, Rician noise and an arbitrary global scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorcli.io.itk import Grid
from tumorcli.synth.grid import smooth_random_field

MODALITIES = ("t1n", "t1c", "t2w", "t2f")
# class: (T1 ms, T2 ms, relative PD, [Gd] mM on t1c)
TISSUE_MR = {
    "csf": (4000.0, 2000.0, 1.00, 0.0),
    "gm": (1500.0, 95.0, 0.80, 0.0),
    "wm": (950.0, 75.0, 0.70, 0.0),
    "oedema": (1650.0, 170.0, 0.86, 0.0),
    "enhancing": (1450.0, 120.0, 0.85, 0.45),
    "necrosis": (2300.0, 260.0, 0.90, 0.0),
    "bone": (400.0, 2.0, 0.05, 0.0),
    "fat": (380.0, 110.0, 0.90, 0.0),
    "soft_tissue": (1400.0, 45.0, 0.70, 0.08),
}
R1_PER_MM_MS = 4.0 / 1000.0  # r1 ≈ 4 /(mM·s) at 3 T, in /(mM·ms)
SEQUENCES = {  # (kind, TR, TE, TI) in ms
    "t1n": ("se", 500.0, 10.0, 0.0),
    "t1c": ("se", 500.0, 10.0, 0.0),
    "t2w": ("se", 4000.0, 100.0, 0.0),
    "t2f": ("flair", 9000.0, 120.0, 2500.0),
}


@dataclass(frozen=True)
class SubjectContrast:
    """Per-subject tissue properties (jittered table) and per-scan sequence timings."""

    tissue_mr: dict
    sequences: dict


def sample_contrast(rng: np.random.Generator) -> SubjectContrast:
    tissue = {name: (t1 * rng.uniform(0.93, 1.07), t2 * rng.uniform(0.93, 1.07),
                     pd * rng.uniform(0.97, 1.03), gd * rng.uniform(0.7, 1.3))
              for name, (t1, t2, pd, gd) in TISSUE_MR.items()}
    sequences = {name: (kind, tr * rng.uniform(0.9, 1.1), te * rng.uniform(0.9, 1.1), ti)
                 for name, (kind, tr, te, ti) in SEQUENCES.items()}
    return SubjectContrast(tissue, sequences)


def signal(modality: str, contrast: SubjectContrast, tissue_class: str) -> float:
    """Noise-free signal of one pure tissue class in one modality (arbitrary units)."""
    t1, t2, pd, gd = contrast.tissue_mr[tissue_class]
    kind, tr, te, ti = contrast.sequences[modality]
    if modality == "t1c" and gd > 0:
        t1 = 1.0 / (1.0 / t1 + R1_PER_MM_MS * gd)
    if kind == "flair":
        return float(pd * abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2))
    return float(pd * (1 - np.exp(-tr / t1)) * np.exp(-te / t2))


def _smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def class_fractions(tissue: np.ndarray, head: np.ndarray, density: np.ndarray,
                    t2_signal: np.ndarray, necrotic: np.ndarray, cavity: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """Fractions of every class per voxel (each (X, Y, Z) float32, summing to <= 1; rest is air).

    tissue: (X, Y, Z, 3) csf/gm/wm; head: non-brain labels 1 bone, 2 fat, 3 soft tissue;
    density/t2_signal/necrotic/cavity: tumour maps interpolated onto the same grid.
    """
    brain = tissue.sum(axis=-1)
    cavity = np.clip(cavity, 0, 1) * (brain > 0.05)
    necrosis = np.clip(necrotic, 0, 1) * (1 - cavity)
    enhancing = _smoothstep(density, 0.72, 0.85) * (1 - necrosis - cavity)
    oedema = _smoothstep(t2_signal, 0.10, 0.25) * (1 - necrosis - cavity - enhancing)
    tumour = (cavity + necrosis + enhancing + oedema) * (brain > 0.05)
    keep = 1 - np.clip(tumour, 0, 1)
    outside_brain = np.clip(1 - brain, 0, 1)
    fractions = {
        "csf": tissue[..., 0] * keep + cavity + outside_brain * ((head == 0) & (brain > 0.05)),
        "gm": tissue[..., 1] * keep,
        "wm": tissue[..., 2] * keep,
        "oedema": oedema * brain, "enhancing": enhancing * brain, "necrosis": necrosis * brain,
    }
    for label, name in enumerate(("bone", "fat", "soft_tissue"), start=1):
        fractions[name] = outside_brain * (head == label)
    return {name: value.astype(np.float32) for name, value in fractions.items()}


def clean_image(modality: str, contrast: SubjectContrast, fractions: dict[str, np.ndarray]
                ) -> np.ndarray:
    """Noise-free, bias-free image: the partial-volume mixture of class signals (float32)."""
    image = np.zeros(next(iter(fractions.values())).shape, np.float32)
    for name, fraction in fractions.items():
        image += np.float32(signal(modality, contrast, name)) * fraction
    return image


@dataclass(frozen=True)
class ScannerEffects:
    """One scan's bias-field amplitude, signal-to-noise ratio (in white matter) and scale."""

    bias_amplitude: float
    snr_white_matter: float
    white_matter_level: float


def sample_scanner(rng: np.random.Generator) -> ScannerEffects:
    snr = float(rng.uniform(18, 35))
    # One intensity unit is 1–1.4 noise sd: rounding adds <= 1/6 of the noise variance
    # (the noise already hides finer steps), and the files stay small (NIfTI gzip is poor
    # at noisy data).
    return ScannerEffects(bias_amplitude=float(rng.uniform(0.10, 0.30)), snr_white_matter=snr,
                          white_matter_level=snr * float(rng.uniform(0.7, 1.0)))


def acquire(clean: np.ndarray, grid: Grid, white_matter_signal: float, scanner: ScannerEffects,
            rng: np.random.Generator, mask: np.ndarray | None = None) -> np.ndarray:
    """Scanner output as integers: bias field × image, Rician noise, global scale, optional mask.

    uint8 when every voxel fits (most skull-stripped scans), else int16.

    white_matter_signal: the clean signal of white matter in this modality (sets the noise).
    mask: keep only these voxels (skull stripping), zero elsewhere.
    """
    bias = np.exp(scanner.bias_amplitude * smooth_random_field(rng, grid, control_points=4)
                  ).astype(np.float32)
    sigma = white_matter_signal / scanner.snr_white_matter
    real = clean * bias + rng.normal(0, sigma, clean.shape).astype(np.float32)
    imaginary = rng.normal(0, sigma, clean.shape).astype(np.float32)
    magnitude = np.sqrt(real * real + imaginary * imaginary)
    image = magnitude * np.float32(scanner.white_matter_level / white_matter_signal)
    if mask is not None:
        image *= mask
    image = np.clip(np.rint(image), 0, 32767)
    return image.astype(np.uint8 if image.max() <= 255 else np.int16)
