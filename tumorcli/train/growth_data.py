"""Training examples for `tumor train growth`: a patient's sessions, each with t1n, t1c, t2f
and a label mask, with the day and the treatments given since the previous session; an example
is three earlier sessions → a later target session (every ordered choice of three sources
before each target).

Layout: BraTS case folders `<patient>-<session>` and a `cohort.csv` at the root with the
columns subject, session, day and treatments (what `tumor synth-cohort` writes: "surgery",
"rt", "tmz" joined by "+", or "none"; for real data, write that csv). Sessions of one patient
must share a grid (BraTS / `tumor preprocess` output).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from tumorcli.errors import BadInput
from tumorcli.nets.growth import SOURCES, treatment_flags

COLUMNS = {"subject", "session", "day", "treatments"}


@dataclass(frozen=True)
class Series:
    name: str                        # the patient
    patient: str
    folders: tuple[Path, ...]        # its sessions in time order
    days: tuple[float, ...]
    treatments: tuple[str, ...]      # given since the previous session


def find_series(root: Path) -> list[Series]:
    """Every patient of the cohort in `root` with at least SOURCES + 1 sessions."""
    from tumorcli.train.data import find_cases, patient_of

    table = root / "cohort.csv"
    if not table.is_file():
        raise BadInput(f"{root}: no cohort.csv with the day and treatments of each session",
                       "write cohort.csv with columns " + ",".join(sorted(COLUMNS)))
    with open(table, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or not COLUMNS <= set(rows[0]):
        raise BadInput(f"{table}: needs the columns " + ", ".join(sorted(COLUMNS)),
                       "as written by tumor synth-cohort (make a new cohort if it lacks "
                       "treatments)")
    info = {f"{row['subject']}-{row['session']}": row for row in rows}
    sessions: dict[str, list] = {}
    for case in find_cases(root):
        if case.name in info:
            sessions.setdefault(patient_of(case.name), []).append(case)
    series = []
    for patient, cases in sorted(sessions.items()):
        if len(cases) <= SOURCES:
            continue
        cases.sort(key=lambda case: float(info[case.name]["day"]))
        for case in cases:
            try:
                treatment_flags(info[case.name]["treatments"])
            except ValueError as error:
                raise BadInput(f"{table}: {case.name}: {error}", "fix the treatments column"
                               ) from None
        series.append(Series(patient, patient, tuple(c.seg.parent for c in cases),
                             tuple(float(info[c.name]["day"]) for c in cases),
                             tuple(info[c.name]["treatments"] for c in cases)))
    if not series:
        raise BadInput(f"{root}: no patient has {SOURCES + 1} or more sessions",
                       "make a cohort with tumor synth-cohort --sessions 5")
    return series


def examples_of(count: int) -> list[tuple[int, ...]]:
    """(s1, s2, s3, target) index tuples of a patient with `count` sessions."""
    return [(*sources, target) for target in range(SOURCES, count)
            for sources in combinations(range(target), SOURCES)]


@dataclass
class SeriesSlices:
    """One patient's sessions as slices in model units (float16 to save memory):
    images (S, K, 3, H, W), masks (S, K, 1, H, W)."""

    name: str
    images: np.ndarray
    masks: np.ndarray
    days: tuple[float, ...]
    treatments: tuple[str, ...]


def load_series(series: Series, spacing_mm: float, multiple: int) -> SeriesSlices:
    """All sessions harmonised to the first one (infer/growth_inputs): the sources and the
    target of every example then share scanner conditions."""
    from tumorcli.infer.growth_inputs import read_session, stack_sessions

    sessions, masks = [], []
    for folder in series.folders:
        images, mask = read_session(folder)
        sessions.append(images)
        masks.append(mask)
    stack = stack_sessions(sessions, masks, spacing_mm, reference=0)
    images, masks = stack.slices(multiple)
    return SeriesSlices(series.name, images.astype(np.float16), masks.astype(np.float16),
                        series.days, series.treatments)
