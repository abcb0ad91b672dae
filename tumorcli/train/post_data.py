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


def load_pair(pair: PostPair, spacing_mm: float, multiple: int, intensity: str = "tissue"
              ) -> PairSlices:
    """The pair as slices in model units. With intensity "tissue" the follow-up is also put in
    the pre scan's scanner conditions: divided by its tissue median and by the smooth field by
    which it differs from the pre scan on normal tissue (tumour in neither session), so the
    target holds the disease's change and not the scanner's."""
    from tumorcli.infer.post_inputs import in_scan_units, model_units, volume_slices
    from tumorcli.infer.prepare import onto_grid, prepare
    from tumorcli.io.itk import Grid
    from tumorcli.io.volume import load_volume
    from tumorcli.preprocess.harmonise import normal_tissue, relative_bias, tissue_median_scale
    from tumorcli.preprocess.inputs import read_scan

    pre = prepare({"t1c": read_scan(pair.pre_t1c, "t1c")}, ("t1c",), spacing_mm)
    post = prepare({"t1c": read_scan(pair.post_t1c, "t1c")}, ("t1c",), spacing_mm)
    if pre.source_grid.shape != post.source_grid.shape or not np.allclose(
            pre.source_grid.affine, post.source_grid.affine, atol=1e-3):
        raise BadInput(f"{pair.post_t1c}: not on the grid of {pair.pre_t1c}",
                       "register the sessions first (tumor preprocess puts them on one atlas)")
    labels = {}
    for name, path in (("pre", pair.pre_seg), ("post", pair.post_seg)):
        seg = load_volume(path)
        labels[name] = onto_grid((np.asarray(seg.array) > 0).astype(np.float32), Grid.of(seg),
                                 pre.grid, blur=False)
    either = np.maximum(labels["pre"], labels["post"])
    pre_image, _, _ = model_units(pre, either, intensity)
    if intensity == "tissue":
        spacing = pre.grid.spacing
        normal = normal_tissue(pre.brain & post.brain, either, spacing)
        post_raw = in_scan_units(post)
        post_image = post_raw / tissue_median_scale(post_raw, normal)
        post_image = np.where(pre.brain, post_image / relative_bias(post_image, pre_image,
                                                                    normal, spacing), 0)
    else:
        post_image = post.image[0]
    keep = pre.brain.any(axis=(0, 1))
    return PairSlices(pair.name, volume_slices(pre_image, keep, multiple),
                      volume_slices(post_image.astype(np.float32), keep, multiple),
                      volume_slices(labels["pre"], keep, multiple),
                      SURVIVAL_CLASSES.index(pair.survival))

