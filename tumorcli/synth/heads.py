"""One synthetic head with its skull, for registration tests and benchmarks: every modality's
noise-free image on a chosen grid (to be posed and scanned by `native.posed_scan`), the
white-matter signal of each, a scanned T1c to register onto and the brain mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorcli.io.itk import Grid
from tumorcli.synth import contrast
from tumorcli.synth.cohort import CohortConfig, session_truth, simulate_subject


@dataclass
class Head:
    grid: Grid
    clean: dict[str, np.ndarray]
    white: dict[str, float]
    t1c: np.ndarray
    brain: np.ndarray


def synthetic_head(seed: int, grid: Grid, size: str = "small") -> Head:
    """The first session of a one-subject native-space cohort (`seed`), on `grid`."""
    config = CohortConfig(subjects=1, sessions=1, seed=seed, space="native", size=size,
                          skull=True)
    model = simulate_subject(config, 0)
    truth = session_truth(model, 0, grid)
    clean = {m: contrast.clean_image(m, model.contrast, truth.fractions)
             for m in contrast.MODALITIES}
    white = {m: contrast.signal(m, model.contrast, "wm") for m in contrast.MODALITIES}
    rng = np.random.default_rng([seed, 7])
    t1c = contrast.acquire(clean["t1c"], grid, white["t1c"], contrast.sample_scanner(rng), rng)
    return Head(grid, clean, white, t1c, truth.brain_mask)
