"""Training pairs for `tumor predict-post`: a patient's pre-treatment T1c and tumour mask, the
T1c of the next session (post-treatment) and the survival class, as axial slices.

Layout: BraTS case folders `<patient>-<session>` (e.g. BraTS-GLI-00001-000 and -001) and a
`cohort.csv` at the root with `subject,session,survival_class` columns (what `tumor
synth-cohort` writes; for real data, write that csv). The first session with a mask is "pre";
"post" is the next session (post="next") or the patient's last one (post="last": the longest
follow-up, where short and long survivors differ most). Pre and post must share a grid (BraTS /
`tumor preprocess` output).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorcli.errors import BadInput
from tumorcli.nets.latent_diffusion import SURVIVAL_CLASSES


@dataclass(frozen=True)
class PostPair:
    name: str        # the patient
    patient: str
    pre_t1c: Path
    pre_seg: Path
    post_t1c: Path
    survival: str    # "short" | "long"
    post_seg: Path   # the follow-up's labels (the benchmark scores regrowth inside them)


POST_SESSIONS = ("next", "last")


def find_pairs(root: Path, post: str = "next") -> list[PostPair]:
    """One (pre, post) pair per patient of the cohort in `root`; post: "next" or "last"."""
    if post not in POST_SESSIONS:
        raise BadInput(f"post session {post!r}: expected one of {POST_SESSIONS}", "e.g. next")
    from tumorcli.train.data import find_cases, patient_of

    table = root / "cohort.csv"
    if not table.is_file():
        raise BadInput(f"{root}: no cohort.csv with the survival class of each patient",
                       "write cohort.csv with columns subject,session,survival_class")
    with open(table, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or not {"subject", "survival_class"} <= set(rows[0]):
        raise BadInput(f"{table}: needs the columns subject and survival_class",
                       "as written by tumor synth-cohort")
    survival = {row["subject"]: row["survival_class"] for row in rows}
    sessions: dict[str, list] = {}
    for case in find_cases(root):
        sessions.setdefault(patient_of(case.name), []).append(case)
    pairs = []
    for patient, cases in sorted(sessions.items()):
        cases.sort(key=lambda case: case.name)
        if len(cases) < 2 or survival.get(patient) not in SURVIVAL_CLASSES[1:]:
            continue
        after = cases[1] if post == "next" else cases[-1]
        pairs.append(PostPair(patient, patient, cases[0].images["t1c"], cases[0].seg,
                              after.images["t1c"], survival[patient], after.seg))
    if not pairs:
        raise BadInput(f"{root}: no patient has two sessions and a short/long survival class",
                       "make a cohort with --sessions 2 or more")
    return pairs


@dataclass
class PairSlices:
    """A pair on the net grid as axial slices with brain: (K, 1, H, W) float32 each, padded."""

    name: str
    pre: np.ndarray
    post: np.ndarray
    mask: np.ndarray
    survival: int    # index in SURVIVAL_CLASSES


def volume_slices(volume: np.ndarray, keep: np.ndarray, multiple: int) -> np.ndarray:
    """(X, Y, Z) -> (K, 1, H, W): the kept axial slices, zero-padded to sides divisible by
    `multiple` (centred; `unpad` undoes it)."""
    slices = np.moveaxis(volume[:, :, keep], 2, 0)[:, None]
    height, width = (int(np.ceil(n / multiple)) * multiple for n in volume.shape[:2])
    top, left = (height - volume.shape[0]) // 2, (width - volume.shape[1]) // 2
    out = np.zeros((len(slices), 1, height, width), np.float32)
    out[:, :, top:top + volume.shape[0], left:left + volume.shape[1]] = slices
    return out


def unpad(slices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, ..., H, W) padded slices -> (K, ..., X, Y) as before `volume_slices`."""
    top, left = (slices.shape[-2] - shape[0]) // 2, (slices.shape[-1] - shape[1]) // 2
    return slices[..., top:top + shape[0], left:left + shape[1]]


def load_pair(pair: PostPair, spacing_mm: float, multiple: int) -> PairSlices:
    from tumorcli.infer.prepare import onto_grid, prepare
    from tumorcli.io.itk import Grid
    from tumorcli.io.volume import load_volume
    from tumorcli.preprocess.inputs import read_scan

    pre = prepare({"t1c": read_scan(pair.pre_t1c, "t1c")}, ("t1c",), spacing_mm)
    post = prepare({"t1c": read_scan(pair.post_t1c, "t1c")}, ("t1c",), spacing_mm)
    if pre.source_grid.shape != post.source_grid.shape or not np.allclose(
            pre.source_grid.affine, post.source_grid.affine, atol=1e-3):
        raise BadInput(f"{pair.post_t1c}: not on the grid of {pair.pre_t1c}",
                       "register the sessions first (tumor preprocess puts them on one atlas)")
    seg = load_volume(pair.pre_seg)
    mask = onto_grid((np.asarray(seg.array) > 0).astype(np.float32), Grid.of(seg), pre.grid,
                     blur=False)
    keep = pre.brain.any(axis=(0, 1))
    return PairSlices(pair.name, volume_slices(pre.image[0], keep, multiple),
                      volume_slices(post.image[0], keep, multiple),
                      volume_slices(mask, keep, multiple),
                      SURVIVAL_CLASSES.index(pair.survival))
