"""What `tumor report -i` names: one session, one patient's sessions, or a cohort of patients.

BraTS 2023 naming: a session folder `BraTS-GLI-00002-001` is session 001 of patient
`BraTS-GLI-00002`; sessions of one patient lie side by side in one folder. `-i` may be
- a session folder (images and/or `<case>-seg.nii.gz` in it): a one-session report;
- a folder of session folders: one patient → a longitudinal report, several → a cohort batch;
- `FOLDER/PATIENT`, a patient's name inside a folder of session folders (`sample_data/atlas/
  BraTS-GLI-00002` for the folders `…-000`, `…-001`, `…-002`).
Days come from `--days CSV` or a `cohort.csv` (columns subject, session, day) beside the session
folders or one level up, as for `tumor volumes --subject`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from tumorcli.errors import BadInput
from tumorcli.io.volume import is_nifti_path
from tumorcli.preprocess.inputs import modality_of

_SESSION_NAME = re.compile(r"^(?P<patient>.+)-(?P<session>\d{3})$")
BACKGROUND_ORDER = ("t1c", "t2f", "t1n", "t2w")  # which scan the overlays are drawn on


@dataclass
class SessionInput:
    """One session: case id (`BraTS-GLI-00002-001`), its folder, images found, labels, day."""

    case: str
    patient: str
    session: int
    folder: Path | None
    images: dict[str, Path] = field(default_factory=dict)
    labels: Path | None = None
    day: int | None = None


@dataclass
class PatientInput:
    """A patient and its sessions sorted by session number."""

    name: str
    sessions: list[SessionInput]


def split_case(name: str) -> tuple[str, int]:
    """`BraTS-GLI-00002-001` → ("BraTS-GLI-00002", 1); a name without a session → (name, 0)."""
    match = _SESSION_NAME.match(name)
    return (match["patient"], int(match["session"])) if match else (name, 0)


def _images_in(folder: Path) -> dict[str, Path]:
    """{modality: NIfTI file or DICOM series folder} named like t1c/t2f/... inside `folder`."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        modality = None if entry.name.startswith(".") else modality_of(entry.name)
        if modality and (entry.is_dir() or is_nifti_path(entry)):
            found.setdefault(modality, entry)
    return found


def _own_labels(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_path(p)
                  and re.search(r"[-_]seg\.nii(\.gz)?$", p.name, re.IGNORECASE))


def is_session(folder: Path) -> bool:
    """A folder holding a session's images, or its one label mask (a folder of several masks
    is not a session)."""
    return folder.is_dir() and (bool(_images_in(folder)) or len(_own_labels(folder)) == 1)


def _session(folder: Path) -> SessionInput:
    patient, number = split_case(folder.name)
    return SessionInput(folder.name, patient, number, folder, _images_in(folder))


def find_patients(input: Path, days_csv: Path | None = None) -> tuple[list[PatientInput], Path]:
    """The patients `-i` names (see the module docstring) and the folder holding their session
    folders. BadInput when it names none."""
    if input.is_dir() and is_session(input):
        sessions, home = [_session(input)], input.parent
    elif input.is_dir():
        sessions = [_session(sub) for sub in sorted(input.iterdir())
                    if not sub.name.startswith(".") and is_session(sub)]
        home = input
        if not sessions:
            raise BadInput(f"{input}: holds no session folders (no t1n/t1c/t2w/t2f images or "
                           "*-seg.nii.gz in it or in its subfolders)",
                           "give a session folder, a patient's sessions folder or a cohort")
    elif input.parent.is_dir():
        sessions = [_session(sub) for sub in sorted(input.parent.iterdir())
                    if split_case(sub.name)[0] == input.name and sub.name != input.name
                    and is_session(sub)]
        home = input.parent
        if not sessions:
            raise BadInput(f"{input}: not found, and {input.parent} holds no session folders "
                           f"{input.name}-000, {input.name}-001, …",
                           "give a session folder, a folder of session folders, or "
                           "FOLDER/PATIENT for the sessions FOLDER/PATIENT-NNN")
    else:
        raise BadInput(f"{input}: not found", "check the path given to -i/--input")
    days = read_days(days_csv) if days_csv is not None else _cohort_days(home)
    patients: dict[str, list[SessionInput]] = {}
    for session in sessions:
        session.day = days.get((session.patient, session.session))
        patients.setdefault(session.patient, []).append(session)
    result = []
    for name, own in sorted(patients.items()):
        own.sort(key=lambda s: s.session)
        for first, second in zip(own, own[1:]):
            if first.session == second.session:
                raise BadInput(f"{first.folder} and {second.folder}: both are session "
                               f"{first.session:03d} of {name}", "keep one folder per session")
        result.append(PatientInput(name, own))
    return result, home


def _cohort_days(home: Path) -> dict[tuple[str, int], int]:
    from tumorcli.metrics.volumes import cohort_days

    return cohort_days(home)[0]


def read_days(path: Path) -> dict[tuple[str, int], int]:
    """{(patient, session): day} from a CSV with the columns subject, session, day."""
    if not path.is_file():
        raise BadInput(f"{path}: --days file not found", "give a CSV with columns "
                       "subject,session,day")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"subject", "session", "day"} <= set(reader.fieldnames or ()):
            raise BadInput(f"{path}: needs the columns subject, session, day",
                           "e.g. subject,session,day / BraTS-GLI-00002,000,0")
        days = {}
        for line, row in enumerate(reader, start=2):
            try:
                days[(row["subject"].strip(), int(row["session"]))] = int(float(row["day"]))
            except (TypeError, ValueError):
                raise BadInput(f"{path}: line {line} has no whole session number and day",
                               "session like 000 or 1, day a number of days") from None
    return days


def attach_labels(patient: PatientInput, seg: Path | None, single: bool) -> None:
    """Set each session's labels from `--seg`: a file (one session only) or a folder of
    `<case>-seg.nii.gz` / `<case>.nii.gz` (found below it). BadInput naming what is missing.
    Without --seg nothing is attached: the report segments."""
    if seg is None:
        return
    if not seg.exists():
        raise BadInput(f"{seg}: --seg not found", "give a label mask or a folder of them")
    if seg.is_file():
        if not single or len(patient.sessions) != 1:
            cases = ", ".join(s.case for s in patient.sessions)
            raise BadInput(f"--seg {seg}: one file, but there are several sessions ({cases})",
                           "give --seg a folder of <case>-seg.nii.gz files")
        patient.sessions[0].labels = seg
        return
    from tumorcli.metrics.cases import masks_by_case

    masks = masks_by_case(seg, "--seg")
    for session in patient.sessions:
        if session.case not in masks:
            raise BadInput(f"--seg {seg}: no labels for session {session.case} (looked for "
                           f"{session.case}-seg.nii.gz or {session.case}.nii.gz below it)",
                           "segment it first (tumor segment), or leave out --seg to let the "
                           "report segment")
        session.labels = masks[session.case]


def attach_maps(patient: PatientInput, given: list[str], option: str) -> dict[str, Path]:
    """{case: file} for `--post`/`--uncertainty` values `[CASE=]FILE`: without CASE= the session
    whose case id starts the file name, or the only session."""
    attached: dict[str, Path] = {}
    cases = [s.case for s in patient.sessions]
    for text in given:
        case, _, file = text.rpartition("=") if "=" in text else ("", "", text)
        path = Path(file)
        if not path.is_file():
            raise BadInput(f"{option} {text}: {path} not found", "give a NIfTI file")
        if not case:
            named = [c for c in cases if path.name.startswith(c)]
            case = named[-1] if named else (cases[0] if len(cases) == 1 else "")
        if case not in cases:
            raise BadInput(f"{option} {text}: which session? ({', '.join(cases)})",
                           f"write {option} CASE=FILE, e.g. {option} {cases[0]}={path.name}")
        attached[case] = path
    return attached
