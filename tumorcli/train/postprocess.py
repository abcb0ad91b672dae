"""Choosing a segmentation model's (or a refiner's) small-region post-processing on sessions it
did not train on (nnU-Net's way: try the rule on held-in cases, keep it only where it raises the
score).

Each session (the val split, or an unseen cohort) is segmented once without post-processing
(the `tumor segment` path, labels on the session's own grid) and scored (Dice, HD95 per
region). The rule only ever empties a predicted region (ET, or the whole tumour core), and
an emptied region scores exactly BraTS's convention: Dice 1 / HD95 0 where the reference lacks it too, else Dice 0 / HD95 373.13 mm.
So every pair of thresholds in CANDIDATES_CM3 is scored from those numbers alone, by the mean
over sessions and TC/WT/ET of Dice − HD95 / 373.13 (the two BraTS ranking scores on one scale;
Dice alone would trade one false ET for a missed small one, which costs HD95 the same 373 mm).
The best pair wins, the smaller thresholds on a tie (so a rule that changes nothing stays off).

Before that, each stray-component rule of STRAY_CANDIDATES (a fraction of the largest component
and a distance from it, infer/postprocess.py) is tried: it changes the masks, so the sessions it
touches are scored again, and the small-region pairs are searched on top of each. The best
combination by the same merit wins; on a tie the stray rule stays off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tumorcli.infer.postprocess import ET, NETC, LabelRule
from tumorcli.metrics.distance import HD95_ONE_EMPTY_MM
from tumorcli.metrics.regions import EVALUATED_REGIONS as REGIONS

CANDIDATES_CM3 = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
STRAY_CANDIDATES = ((0.0, 0.0),) + tuple((fraction, distance) for fraction in (0.1, 0.25, 0.5)
                                         for distance in (10.0, 20.0, 40.0))


def val_sessions(count: int) -> str:
    """How a card names a rule chosen on `count` val sessions."""
    return f"the {count} val session" + "s" * (count != 1)


@dataclass(frozen=True)
class TunedRule:
    rule: LabelRule
    sessions: int
    dice_before: tuple[float, float, float]   # mean TC/WT/ET Dice of the sessions, no rule
    dice_after: tuple[float, float, float]    # the same with the chosen rule
    hd95_before: tuple[float, float, float]   # mean TC/WT/ET HD95 (mm), no rule
    hd95_after: tuple[float, float, float]
    tuned_on: str = ""                        # which sessions, in words

    def to_dict(self) -> dict:
        rounded = lambda values: [round(v, 4) for v in values]
        return {**self.rule.to_dict(), "sessions": self.sessions, "tuned_on": self.tuned_on,
                "dice_before": rounded(self.dice_before),
                "dice_after": rounded(self.dice_after),
                "hd95_mm_before": rounded(self.hd95_before),
                "hd95_mm_after": rounded(self.hd95_after)}


@dataclass(frozen=True)
class SessionScores:
    """One session's predicted ET and tumour-core volumes and its scores without the rule."""

    et_cm3: float
    tc_cm3: float
    truth_has: dict[str, bool]       # reference region non-empty, per TC/WT/ET
    dice: dict[str, float]
    hd95: dict[str, float]

    @staticmethod
    def of(labels, truth) -> "SessionScores":
        """From predicted and reference label Volumes on one grid."""
        from tumorcli.metrics.evaluation import evaluate_case
        from tumorcli.metrics.regions import parse_labels

        scores = {s.region: s for s in evaluate_case("", labels, truth, parse_labels())}
        predicted, expected = np.asarray(labels.array), np.asarray(truth.array)
        voxel = labels.voxel_volume_mm3 / 1000.0
        return SessionScores(
            et_cm3=float((predicted == ET).sum() * voxel),
            tc_cm3=float(np.isin(predicted, (NETC, ET)).sum() * voxel),
            truth_has={"TC": bool(np.isin(expected, (NETC, ET)).any()),
                       "WT": bool(expected.any()), "ET": bool((expected == ET).any())},
            dice={r: scores[r].dice for r in REGIONS},
            hd95={r: scores[r].hd95_mm for r in REGIONS})

    def scores(self, rule: LabelRule) -> tuple[np.ndarray, np.ndarray]:
        """(3,) Dice and (3,) HD95 of TC/WT/ET with `rule` applied."""
        emptied = set()
        if 0 < self.et_cm3 < rule.min_et_cm3:
            emptied.add("ET")
        if 0 < self.tc_cm3 < rule.min_tc_cm3:   # ET → NETC keeps the core's volume
            emptied |= {"TC", "ET"}
        dice = [(0.0 if self.truth_has[r] else 1.0) if r in emptied else self.dice[r]
                for r in REGIONS]
        hd95 = [(HD95_ONE_EMPTY_MM if self.truth_has[r] else 0.0) if r in emptied
                else self.hd95[r] for r in REGIONS]
        return np.array(dice), np.array(hd95)


def tune_small_regions(folder: Path, cases: list, device: torch.device, tuned_on: str = "",
                       advance: Callable[..., None] = lambda steps=1: None,
                       prior: Path | None = None) -> TunedRule:
    """The best LabelRule for the model in `folder` on `cases` (train.data.Case with a
    seg file; `tuned_on` says which, for the card); raises ValueError when there are none.
    With `prior`, `folder` is a refiner and the sessions go through `tumor segment --refine`'s
    path with its defaults (the prior model, then conditional refinement), both without rule."""
    from tumorcli.infer.segment import Segmenter, segment_volumes
    from tumorcli.io.volume import load_volume
    from tumorcli.preprocess.inputs import read_scan

    if not cases:
        raise ValueError("no validation sessions to tune the post-processing on")
    segmenter = Segmenter.load(prior or folder, device, postprocess=False)
    refine = None
    if prior is not None:
        from tumorcli.infer.refine import RefineOptions, Refiner

        refine = RefineOptions(Refiner.load(folder, device, postprocess=False))
        refine.refiner.check_prior(segmenter.config, folder)
    predictions = []
    for case in cases:
        volumes = {m: read_scan(case.images[m], m) for m in segmenter.config.modalities}
        predictions.append((segment_volumes(segmenter, volumes, refine=refine).labels,
                            load_volume(case.seg)))
        advance()
    base = [SessionScores.of(labels, truth) for labels, truth in predictions]
    means = {}
    for fraction, distance in STRAY_CANDIDATES:
        strays = LabelRule(max_stray_fraction=fraction, min_stray_distance_mm=distance)
        sessions = [score if fraction == 0 else _rescored(strays, labels, truth, score)
                    for (labels, truth), score in zip(predictions, base)]
        for min_et in CANDIDATES_CM3:
            for min_tc in CANDIDATES_CM3:
                rule = LabelRule(min_et, min_tc, fraction, distance)
                dice, hd95 = zip(*(session.scores(rule) for session in sessions))
                means[rule] = (np.mean(dice, 0), np.mean(hd95, 0))
    merit = lambda rule: float(np.mean(means[rule][0] - means[rule][1] / HD95_ONE_EMPTY_MM))
    best = max(means, key=lambda r: (round(merit(r), 9), -r.max_stray_fraction,
                                     -(r.min_et_cm3 + r.min_tc_cm3)))
    off = LabelRule()
    as_floats = lambda values: tuple(float(v) for v in values)
    return TunedRule(best, len(base), as_floats(means[off][0]), as_floats(means[best][0]),
                     as_floats(means[off][1]), as_floats(means[best][1]), tuned_on)


def _rescored(strays: LabelRule, labels, truth, unchanged: "SessionScores") -> "SessionScores":
    """The session's scores after the stray-component rule (the same object when it removes
    nothing)."""
    array = np.asarray(labels.array)
    cleaned = strays.without_strays(array, labels.spacing)
    return unchanged if cleaned is array else SessionScores.of(labels.with_array(cleaned), truth)


def write_postprocess(folder: Path, tuned: TunedRule) -> None:
    """Keep the tuned rule in the model's config.json (atomically; the rest stays as written)."""
    from tumorcli.nets.weights import read_config, write_config

    write_config(folder, {**read_config(folder), "postprocess": tuned.to_dict()})

