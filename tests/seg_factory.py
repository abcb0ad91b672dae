"""Tiny labelled subjects for segmentation tests: a brain ellipsoid holding a tumour of nested
spheres (NETC core, ET shell, SNFH oedema) whose intensities differ by modality, as in BraTS."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

MODALITIES = ("t1n", "t1c", "t2w", "t2f")
# mean intensity per label (0 brain, 1 NETC, 2 SNFH, 3 ET) for each modality
CONTRAST = {"t1n": (100, 60, 80, 90), "t1c": (100, 50, 90, 220),
            "t2w": (100, 200, 170, 140), "t2f": (100, 130, 210, 160)}


def lps_affine(spacing: float, shape) -> np.ndarray:
    """BraTS-like axes (i → left, j → posterior, k → superior), centred on world 0."""
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine


def subject_arrays(affine: np.ndarray, shape, rng: np.random.Generator, noise: float = 8.0
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({modality: (X, Y, Z) float32}, labels uint8) for a random tumour inside a brain."""
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = (affine[:3, :3] @ index + affine[:3, 3:]).T.reshape(*shape, 3)  # (X, Y, Z, 3) mm
    half = np.abs(affine[:3, :3] @ (np.array(shape) - 1)) / 2
    brain = (((world / (half * 0.9)) ** 2).sum(-1) <= 1)
    centre = rng.uniform(-0.3, 0.3, 3) * half
    radius = rng.uniform(0.28, 0.4) * half.min()
    distance = np.linalg.norm(world - centre, axis=-1)
    labels = np.zeros(shape, np.uint8)
    labels[(distance <= radius) & brain] = 2
    labels[distance <= 0.55 * radius] = 3
    labels[distance <= 0.35 * radius] = 1
    images = {}
    for modality in MODALITIES:
        means = np.array(CONTRAST[modality], np.float32) * rng.uniform(0.9, 1.1)
        image = means[labels] + rng.normal(0, noise, shape).astype(np.float32)
        images[modality] = np.where(brain, np.maximum(image, 1), 0).astype(np.float32)
    labels[~brain] = 0
    return images, labels


def write_subject(folder: Path, name: str, seed: int, shape=(48, 48, 40), spacing=2.0,
                  affine: np.ndarray | None = None) -> Path:
    """folder/name/name-{t1n,t1c,t2w,t2f,seg}.nii.gz; returns the case folder."""
    affine = lps_affine(spacing, shape) if affine is None else affine
    images, labels = subject_arrays(affine, shape, np.random.default_rng(seed))
    case = folder / name
    case.mkdir(parents=True, exist_ok=True)
    for modality, image in images.items():
        nib.save(nib.Nifti1Image(image, affine), case / f"{name}-{modality}.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), case / f"{name}-seg.nii.gz")
    return case


def write_cohort(folder: Path, patients: int = 6, sessions: int = 1, seed: int = 0) -> Path:
    for patient in range(1, patients + 1):
        for session in range(sessions):
            write_subject(folder, f"BraTS-GLI-{patient:05d}-{session:03d}",
                          seed * 1000 + patient * 10 + session)
    return folder


def write_post_cohort(folder: Path, patients: int) -> Path:
    """A write_cohort of `patients` × 2 sessions with a cohort.csv of survival classes
    (odd patients short, even long survivors), as predict-post reads it."""
    import csv

    root = write_cohort(folder, patients=patients, sessions=2)
    with open(root / "cohort.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["subject", "session", "survival_class"])
        for patient in range(1, patients + 1):
            for session in ("000", "001"):
                writer.writerow([f"BraTS-GLI-{patient:05d}", session,
                                 "short" if patient % 2 else "long"])
    return root
