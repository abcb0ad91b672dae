"""Training cases for the diffusion refiners: a case's net input and labels plus the coarse
prior of a segmentation model, computed once and cached in `<run>/priors/` as safetensors.

The prior is the segmentation model's TC/WT/ET probabilities on its own grid (the grid the
refiner works on), stored as background/NETC/SNFH/ET probabilities so both refiners read the
four channels the study's refiners take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorcli.train.data import Case, LoadedCase, load_case

PRIORS = "priors"


@dataclass
class RefineCase(LoadedCase):
    prior: np.ndarray = None    # (4, X, Y, Z) float16 class probabilities of the prior model


def load_refine_case(case: Case, segmenter, cache: Path) -> RefineCase:
    """`case` on the prior model's grid with its prior; the prior comes from `cache` when a
    previous run (or an interrupted one) computed it."""
    from safetensors.numpy import load_file, save_file

    from tumorcli.io.atomic import atomic_file
    from tumorcli.nets.segmentation import classes_from_regions

    config = segmenter.config
    loaded = load_case(case, config.modalities, config.spacing_mm)
    path = cache / f"{case.name}.safetensors"
    prior = load_file(str(path))["prior"] if path.is_file() else None
    if prior is None or prior.shape[1:] != loaded.labels.shape:
        regions = segmenter.probabilities(loaded.image.astype(np.float32))
        prior = classes_from_regions(regions).numpy().astype(np.float16)
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as temporary:
            save_file({"prior": prior}, str(temporary))
    return RefineCase(**vars(loaded), prior=prior)
