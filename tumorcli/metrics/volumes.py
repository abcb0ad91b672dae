"""Tumour volumes in cm³ per region, and their course over a subject's sessions.

volume_cm3 = voxels × |det(affine[:3, :3])| / 1000: right for any orientation, oblique affines
and anisotropic voxels. A mask is read once (header and voxels) and counted in one pass.

Response per follow-up session, RANO-style on the enhancing tumour (ET) volume. As in RANO,
progression is judged against the nadir (the smallest ET so far, baseline included) and
response against the baseline (the first session):
- ET ≥ +25 % over the nadir, or ET back after the nadir had none → progression;
- else, with baseline ET > 0: ET = 0 → complete response; ET change vs baseline ≤ −50 % →
  partial response; otherwise stable;
- a baseline and nadir without ET and still none → stable. The percentage change vs a baseline
  without ET is left empty (undefined).
Volumetric only: no clinical status, steroids or non-enhancing (T2/FLAIR) progression criteria.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from tumorcli.errors import BadInput
from tumorcli.io.volume import is_nifti_path, load_volume
from tumorcli.metrics.regions import (REGIONS, LabelScheme, as_label_array, label_counts,
                                      region_voxels)
from tumorcli.metrics.tables import TableLayout

VOLUME_COLUMNS = ("file", "region", "voxels", "volume_cm3")
PROGRESSION_INCREASE = 0.25
PARTIAL_RESPONSE_DECREASE = 0.50
CHANGE_REGIONS = ("ET", "TC", "WT")
SESSION_COLUMNS = ("subject", "session", "day", *(f"{r.lower()}_cm3" for r in REGIONS),
                   *(f"{r.lower()}_change_pct" for r in CHANGE_REGIONS), "response", "file")
# The two tables `tumor volumes` writes (masks; --subject), for `tumor volumes --merge`; mask
# rows sorted as a folder's masks are found, sessions by subject (each subject in one shard).
TABLES = (TableLayout(VOLUME_COLUMNS, ("file", "region"), order=lambda row: Path(row["file"])),
          TableLayout(SESSION_COLUMNS, ("subject", "session")))


def region_volumes(path: str | Path, scheme: LabelScheme) -> dict[str, tuple[int, float]]:
    """{region: (voxels, volume in cm³)} for NETC, SNFH, ET, TC and WT of the mask at `path`.

    Raises BadInput naming the file when it is unreadable or not a label mask of `scheme`.
    """
    volume = load_volume(path)
    labels = as_label_array(volume.array, str(path))
    voxels = region_voxels(label_counts(labels, str(path), scheme), scheme)
    voxel_cm3 = volume.voxel_volume_mm3 / 1000.0
    return {region: (count, count * voxel_cm3) for region, count in voxels.items()}


def response(baseline_et_cm3: float, et_cm3: float, nadir_et_cm3: float | None = None) -> str:
    """RANO-style response of a follow-up from its enhancing tumour volume (module docstring).

    nadir_et_cm3: smallest ET of the earlier sessions, baseline included (default: baseline).
    """
    nadir = baseline_et_cm3 if nadir_et_cm3 is None else min(nadir_et_cm3, baseline_et_cm3)
    if et_cm3 > 0 and (nadir == 0 or (et_cm3 - nadir) / nadir >= PROGRESSION_INCREASE):
        return "progression"
    if baseline_et_cm3 == 0:
        return "stable"
    if et_cm3 == 0:
        return "complete response"
    if (et_cm3 - baseline_et_cm3) / baseline_et_cm3 <= -PARTIAL_RESPONSE_DECREASE:
        return "partial response"
    return "stable"


# BraTS 2023: BraTS-GLI-00001-000, the last three digits are the session (000 = pre-treatment).
_SESSION_NAME = re.compile(r"^(?P<subject>.+)-(?P<session>\d{3})$")


@dataclass
class Session:
    """One session of a subject: its mask, day (from cohort.csv, else None) and volumes."""

    subject: str
    session: int
    path: Path
    day: int | None = None
    volumes_cm3: dict[str, float] = field(default_factory=dict)


def find_sessions(folder: Path) -> list[Session]:
    """Sessions under `folder`, BraTS 2023 naming: session folders
    `BraTS-GLI-00001-000/BraTS-GLI-00001-000-seg.nii.gz`, or such `*-seg.nii.gz` files directly
    in `folder`. Sorted by subject, then session number."""
    from tumorcli.metrics.cases import case_id

    if not folder.is_dir():
        raise BadInput(f"{folder}: not a folder", "give --subject the folder of session folders")
    candidates = [p for p in folder.iterdir() if p.is_file() and is_nifti_path(p)]
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        candidates += [p for p in child.iterdir() if p.is_file() and is_nifti_path(p)]
    sessions = []
    for path in candidates:
        if not re.search(r"[-_]seg\.nii(\.gz)?$", path.name, re.IGNORECASE):
            continue
        match = _SESSION_NAME.match(case_id(path))
        if match:
            sessions.append(Session(match["subject"], int(match["session"]), path))
    if not sessions:
        raise BadInput(f"{folder}: no session masks named like BraTS-GLI-00001-000-seg.nii.gz",
                       "give a folder of session folders (…-000, …-001) or of *-seg.nii.gz files")
    sessions.sort(key=lambda s: (s.subject, s.session))
    for first, second in zip(sessions, sessions[1:]):
        if (first.subject, first.session) == (second.subject, second.session):
            raise BadInput(f"{first.path} and {second.path}: both are session "
                           f"{first.session:03d} of {first.subject}", "keep one mask per session")
    return sessions


def cohort_days(folder: Path) -> tuple[dict[tuple[str, int], int], Path | None]:
    """{(subject, session): day} from a cohort.csv (columns subject, session, day) in `folder`
    or its parent; ({}, None) when there is none."""
    for candidate in (folder / "cohort.csv", folder.parent / "cohort.csv"):
        if candidate.is_file():
            break
    else:
        return {}, None
    with open(candidate, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"subject", "session", "day"} <= set(reader.fieldnames or ()):
            raise BadInput(f"{candidate}: needs the columns subject, session, day",
                           "fix the header or move the file away")
        days = {}
        for line, row in enumerate(reader, start=2):
            try:
                days[(row["subject"].strip(), int(row["session"]))] = int(float(row["day"]))
            except (TypeError, ValueError):
                raise BadInput(f"{candidate}: line {line} has no whole session number and day",
                               "session like 000 or 1, day a number of days") from None
    return days, candidate


def session_rows(sessions: list[Session]) -> list[dict]:
    """Rows in SESSION_COLUMNS order: volumes, % change vs each subject's first session, and the
    response of each follow-up ("baseline" for the first)."""
    rows = []
    baseline: Session | None = None
    nadir_et = 0.0
    for session in sessions:
        if baseline is None or baseline.subject != session.subject:
            baseline, nadir_et = session, session.volumes_cm3["ET"]
        row = {"subject": session.subject, "session": f"{session.session:03d}",
               "day": session.day}
        row.update({f"{region.lower()}_cm3": session.volumes_cm3[region] for region in REGIONS})
        for region in CHANGE_REGIONS:
            before, now = baseline.volumes_cm3[region], session.volumes_cm3[region]
            row[f"{region.lower()}_change_pct"] = (
                None if before == 0 else 100.0 * (now - before) / before)
        row["response"] = ("baseline" if session is baseline else
                           response(baseline.volumes_cm3["ET"], session.volumes_cm3["ET"],
                                    nadir_et))
        nadir_et = min(nadir_et, session.volumes_cm3["ET"])
        row["file"] = str(session.path)
        rows.append(row)
    return rows
