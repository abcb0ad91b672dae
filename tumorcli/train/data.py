"""Training data for segmentation: labelled cases of a cohort, a seeded split by patient, and a
patch sampler biased towards tumour.

A case is one imaging session (a BraTS case folder: four modalities + `*-seg.nii.gz`). Sessions
of one patient always land in the same split, so no test patient is ever seen in training.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorcli.errors import BadInput
from tumorcli.io.atomic import atomic_file

SPLIT_FILE = "split.json"
_SESSION = re.compile(r"[-_]\d{3}$")


@dataclass(frozen=True)
class Case:
    name: str                 # BraTS case id, e.g. BraTS-GLI-00001-000
    patient: str              # BraTS-GLI-00001
    images: dict[str, Path]
    seg: Path


def patient_of(case_name: str) -> str:
    """BraTS-GLI-00001-000 -> BraTS-GLI-00001 (the session suffix removed)."""
    return _SESSION.sub("", case_name)


def find_cases(root: Path) -> list[Case]:
    """Every folder below `root` holding the four modalities and a `*seg.nii[.gz]` mask."""
    from tumorcli.preprocess.inputs import find_cohort

    if not root.is_dir():
        raise BadInput(f"{root}: not a folder", "give --data a cohort folder (BraTS layout)")
    cases = []
    for subject in find_cohort(root):
        folder = subject.folder or root
        masks = sorted(p for p in folder.iterdir() if p.name.endswith(("seg.nii.gz", "seg.nii")))
        if len(masks) == 1:
            cases.append(Case(subject.name, patient_of(subject.name), subject.images, masks[0]))
    if not cases:
        raise BadInput(f"{root}: no case folder holds a *-seg.nii.gz label mask",
                       "training needs labelled cases, e.g. from tumor synth-cohort")
    return cases


def split_cases(cases: list, seed: int, fractions=(0.7, 0.1, 0.2)) -> dict[str, list[str]]:
    """{"train"|"val"|"test": [names]} for items with .name and .patient: patients shuffled
    with `seed`, then cut by `fractions` (at least one patient each for val and test when
    there are 3+ patients)."""
    patients = sorted({case.patient for case in cases})
    order = np.random.default_rng(seed).permutation(len(patients))
    shuffled = [patients[i] for i in order]
    n = len(shuffled)
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    groups = {"val": shuffled[:n_val], "test": shuffled[n_val:n_val + n_test],
              "train": shuffled[n_val + n_test:]}
    return {part: sorted(c.name for c in cases if c.patient in set(members))
            for part, members in groups.items()}


def write_split(folder: Path, split: dict, data: Path, seed: int) -> None:
    with atomic_file(folder / SPLIT_FILE) as temporary:
        temporary.write_text(json.dumps({"data": str(data), "seed": seed, **split}, indent=2))


def read_split(folder: Path) -> dict[str, list[str]]:
    saved = json.loads((folder / SPLIT_FILE).read_text())
    return {part: saved[part] for part in ("train", "val", "test")}


@dataclass
class LoadedCase:
    name: str
    image: np.ndarray    # (C, X, Y, Z) float16, normalised, on the net grid
    labels: np.ndarray   # (X, Y, Z) uint8 BraTS labels on the net grid
    tumour: np.ndarray   # (N, 3) int32 indices of tumour voxels (for biased sampling)
    brain: np.ndarray    # (M, 3) int32 indices of brain voxels
    offsets: np.ndarray | None = None   # (C,) brain mean / sd of each input (train/augment.py)


def load_case(case: Case, modalities: tuple[str, ...], spacing_mm: float) -> LoadedCase:
    """A case's net input and labels on the net grid, through the same path as inference."""
    from tumorcli.infer.prepare import onto_grid, prepare
    from tumorcli.io.itk import Grid
    from tumorcli.io.volume import load_volume
    from tumorcli.preprocess.inputs import read_scan

    prepared = prepare({m: read_scan(case.images[m], m) for m in modalities}, modalities,
                       spacing_mm)
    seg = load_volume(case.seg)
    if seg.shape[:3] != prepared.source_grid.shape:
        raise BadInput(f"{case.seg}: label mask is {seg.shape[:3]} voxels but the images are "
                       f"{prepared.source_grid.shape}", "the mask must be on the image grid")
    labels = onto_grid(np.rint(seg.array).astype(np.uint8), Grid.of(seg), prepared.grid,
                       labels=True)
    return LoadedCase(case.name, prepared.image.astype(np.float16), labels,
                      np.argwhere(labels > 0).astype(np.int32),
                      np.argwhere(prepared.brain).astype(np.int32),
                      np.array(prepared.means, np.float32) / np.array(prepared.sds, np.float32))


def sample_patches(cases: list[LoadedCase], batch: int, patch: tuple[int, int, int],
                   rng: np.random.Generator, tumour_fraction: float = 0.67,
                   intensity_channels: int | None = None, scanner=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A training batch: images (B, C, *patch) float32 and labels (B, *patch) uint8.

    Each patch is centred on a tumour voxel with probability `tumour_fraction` (else on a brain
    voxel), then augmented: a flip along each axis with p = 0.5, per-channel intensity scale
    (×0.9–1.1) and shift (±0.1 sd), and with p = 0.3 a blur (σ 0.5–1 voxel) so that nets trained on
    noisy 2 mm scans also meet smoother, downsampled 1 mm ones. intensity_channels: only the
    first n channels get the scale, shift and blur (the rest, e.g. a prior, are only cropped).
    scanner: a train.augment.ScannerAugment: instead of the global scale and shift, each modality
    gets its own bias field, gamma, noise, scale and shift (needs the cases' offsets).
    """
    from scipy import ndimage

    size = np.array(patch)
    channels = cases[0].image.shape[0]
    images = np.zeros((batch, channels, *patch), np.float32)
    labels = np.zeros((batch, *patch), np.uint8)
    for b in range(batch):
        case = cases[int(rng.integers(len(cases)))]
        pool = case.tumour if len(case.tumour) and rng.random() < tumour_fraction else case.brain
        centre = pool[int(rng.integers(len(pool)))]
        low = centre - size // 2
        image, label = _crop(case.image, low, size), _crop(case.labels[None], low, size)[0]
        for axis in range(3):
            if rng.random() < 0.5:
                image, label = np.flip(image, axis + 1), np.flip(label, axis)
        n = channels if intensity_channels is None else intensity_channels
        image = np.array(image)
        if scanner is not None:
            from tumorcli.train.augment import augment_channels

            image[:n] = augment_channels(image[:n], case.offsets[:n], rng, scanner)
        else:
            image[:n] = image[:n] * rng.uniform(0.9, 1.1, (n, 1, 1, 1)) \
                + rng.uniform(-0.1, 0.1, (n, 1, 1, 1))
        if rng.random() < 0.3:
            image[:n] = ndimage.gaussian_filter(image[:n], (0, *([rng.uniform(0.5, 1.0)] * 3)))
        images[b], labels[b] = image, label
    return images, labels


def _crop(array: np.ndarray, low: np.ndarray, size: np.ndarray) -> np.ndarray:
    """array[:, low:low+size] with zero padding where the box leaves the grid. (C, *size)"""
    out = np.zeros((array.shape[0], *size), np.float32)
    shape = np.array(array.shape[1:])
    src_low, src_high = np.maximum(low, 0), np.minimum(low + size, shape)
    dst_low = src_low - low
    dst_high = dst_low + (src_high - src_low)
    if np.all(src_high > src_low):
        out[:, dst_low[0]:dst_high[0], dst_low[1]:dst_high[1], dst_low[2]:dst_high[2]] = \
            array[:, src_low[0]:src_high[0], src_low[1]:src_high[1], src_low[2]:src_high[2]]
    return out
