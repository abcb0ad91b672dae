"""The measured facts of a report: everything the narrative may say, taken from the labels.

Per session (all on the labels' own grid and affine, RAS+ world mm):
- volumes in cm³ of NETC, SNFH, ET, TC, WT: `tumorcli.metrics.volumes.region_volumes`, the
  function `tumor volumes` uses, so the numbers are the same; change vs the first session and
  the RANO-style response: `session_rows`, as `tumor volumes --subject` (rule in RANO_RULE);
- maximal diameters (cm) of the tumour core (and whole tumour) along the patient's
  right–left, anterior–posterior and superior–inferior axes: the extent of its voxels' world
  coordinates plus one voxel's extent along that axis;
- enhancement pattern: none (ET < 0.3 cm³), ring (NETC ≥ 0.5 cm³ and ≥ 50 % of the voxels
  just outside the NETC are ET, i.e. enhancement surrounds necrosis), else solid;
- necrosis fraction = NETC / TC; oedema extent = SNFH cm³, its degree (mild ≤ 20, moderate
  ≤ 60, extensive > 60 cm³, as the synthetic cohort's reports) and how far it reaches beyond
  the tumour core (largest distance, mm, of an SNFH voxel from the nearest TC voxel);
- location (hemisphere, lobe, midline shift): see location.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorcli.io.volume import Volume, load_volume
from tumorcli.metrics.regions import LabelScheme, as_label_array
from tumorcli.metrics.volumes import Session, region_volumes, session_rows
from tumorcli.report.location import Location, locate

NETC, SNFH, ET = 1, 2, 3  # canonical class values inside the report
RANO_RULE = ("RANO-style response on the enhancing tumour (ET) volume, the rule of tumor "
             "volumes --subject: ET ≥ +25 % over the nadir (smallest ET so far) or ET back "
             "after none → progression; else no ET left → complete response, ET ≤ −50 % vs "
             "baseline → partial response, otherwise stable. These are RANO's bidimensional "
             "thresholds applied to volume (volumetric equivalents would be ≥ +40 % / "
             "≤ −65 %); no clinical status, steroid or T2/FLAIR criteria.")
ENHANCING_MIN_CM3 = 0.3
NECROSIS_MIN_CM3 = 0.5
RING_COVER = 0.5
AXES = ("right–left", "anterior–posterior", "superior–inferior")


@dataclass
class SessionFacts:
    """Measurements of one session (units in the names: cm³, cm, mm, %)."""

    case: str
    session: int
    day: int | None
    labels_file: str
    volumes_cm3: dict[str, float]
    voxels: dict[str, int]
    change_pct: dict[str, float | None] = field(default_factory=dict)
    response: str = "baseline"
    diameters_cm: dict[str, list[float]] = field(default_factory=dict)  # region → RL, AP, SI
    enhancement: str = "none"
    ring_cover: float | None = None
    necrosis_pct: float | None = None
    oedema_degree: str = "none"
    oedema_reach_mm: float | None = None
    location: Location | None = None

    @property
    def has_tumour(self) -> bool:
        return self.voxels["WT"] > 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PatientFacts:
    """A patient's sessions in order, and how they were labelled."""

    patient: str
    sessions: list[SessionFacts]
    labels_source: str
    rano_rule: str = RANO_RULE

    def as_dict(self) -> dict:
        return {"patient": self.patient, "labels_source": self.labels_source,
                "rano_rule": self.rano_rule, "sessions": [s.as_dict() for s in self.sessions]}


def canonical_labels(volume: Volume, scheme: LabelScheme, source: str) -> np.ndarray:
    """(X, Y, Z) uint8 with 1 NETC, 2 SNFH, 3 ET whatever values `scheme` gives them."""
    labels = as_label_array(np.asarray(volume.array), source)
    lookup = np.zeros(max(int(labels.max(initial=0)), max(scheme.values)) + 1, np.uint8)
    for value, name in scheme.classes:
        lookup[value] = {"NETC": NETC, "SNFH": SNFH, "ET": ET}[name]
    return lookup[np.clip(labels, 0, None)]


def measure_session(case: str, session: int, day: int | None, labels_path: Path,
                    scheme: LabelScheme, background: Volume | None) -> tuple[SessionFacts,
                                                                             Volume]:
    """Facts of one session from its label file (and the scan the overlays use, for the head's
    mid-sagittal plane), and its canonical labels as a Volume on the labels' grid."""
    measured = region_volumes(labels_path, scheme)  # BadInput naming the file when unreadable
    volume = load_volume(labels_path)
    labels = canonical_labels(volume, scheme, str(labels_path))
    facts = SessionFacts(case, session, day, str(labels_path),
                         {region: cm3 for region, (_, cm3) in measured.items()},
                         {region: voxels for region, (voxels, _) in measured.items()})
    if facts.has_tumour:
        _geometry(facts, labels, volume.affine)
        head = None
        if background is not None and background.shape[:3] == labels.shape:
            head = np.asarray(background.array) != 0
        facts.location = locate(labels, volume.affine, head, facts.volumes_cm3)
    return facts, volume.with_array(labels)


def _geometry(facts: SessionFacts, labels: np.ndarray, affine: np.ndarray) -> None:
    box = ndimage.find_objects((labels > 0).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)  # room for dilation
    crop = labels[box]
    offset = np.array([s.start for s in box])
    core, whole = (crop == NETC) | (crop == ET), crop > 0
    for name, mask in (("TC", core), ("WT", whole)):
        if mask.any():
            facts.diameters_cm[name] = extent_cm(np.argwhere(mask) + offset, affine)
    volumes = facts.volumes_cm3
    if volumes["TC"] > 0:
        facts.necrosis_pct = 100.0 * volumes["NETC"] / volumes["TC"]
    netc = crop == NETC
    if volumes["ET"] < ENHANCING_MIN_CM3:
        facts.enhancement = "none"
    elif volumes["NETC"] >= NECROSIS_MIN_CM3:
        shell = ndimage.binary_dilation(netc) & ~netc
        facts.ring_cover = float((shell & (crop == ET)).sum() / max(shell.sum(), 1))
        facts.enhancement = "ring" if facts.ring_cover >= RING_COVER else "solid"
    else:
        facts.enhancement = "solid"
    snfh = volumes["SNFH"]
    facts.oedema_degree = ("none" if snfh < 0.5 else "mild" if snfh <= 20 else
                           "moderate" if snfh <= 60 else "extensive")
    if core.any() and (crop == SNFH).any():
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        distance = ndimage.distance_transform_edt(~core, sampling=spacing)
        facts.oedema_reach_mm = float(distance[crop == SNFH].max())


def extent_cm(index: np.ndarray, affine: np.ndarray) -> list[float]:
    """Extent (cm) of voxels `index` (N, 3) along RAS x (right–left), y (anterior–posterior)
    and z (superior–inferior): range of their centres' world coordinates plus the extent of one
    voxel along that axis (right for oblique grids too)."""
    world = index @ affine[:3, :3].T + affine[:3, 3]
    voxel = np.abs(affine[:3, :3]).sum(axis=1)
    return [float(v) for v in (np.ptp(world, axis=0) + voxel) / 10.0]


def with_course(patient: str, sessions: list[SessionFacts]) -> list[SessionFacts]:
    """Fill change vs baseline and the response from `session_rows` (tumor volumes --subject)."""
    course = [Session(patient, s.session, Path(s.labels_file), s.day, dict(s.volumes_cm3))
              for s in sessions]
    for facts, row in zip(sessions, session_rows(course)):
        facts.change_pct = {region: row[f"{region.lower()}_change_pct"]
                            for region in ("ET", "TC", "WT")}
        facts.response = row["response"]
    return sessions


REGION_NAMES = {"NETC": "necrosis / non-enhancing core", "SNFH": "oedema (SNFH)",
                "ET": "enhancing tumour", "TC": "tumour core (NETC + ET)",
                "WT": "whole tumour"}
