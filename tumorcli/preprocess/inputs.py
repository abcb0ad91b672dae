"""Finding a subject's scans: BraTS names, files named t1n/t1c/t2w/t2f (or common aliases),
DICOM series folders named or described that way, or a cohort folder of such subjects.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from tumorcli.errors import BadInput
from tumorcli.io.volume import Volume, is_nifti_path, load_volume

MODALITIES = ("t1n", "t1c", "t2w", "t2f")
# Checked in this order, so that 't2-flair' is FLAIR and 't1ce' is T1c, not T2w / T1n.
ALIASES = {"t2f": ("t2f", "flair", "t2flair"),
           "t1c": ("t1c", "t1ce", "t1gd", "t1post", "t1wce"),
           "t1n": ("t1n", "t1", "t1w", "t1pre"),
           "t2w": ("t2w", "t2")}
NOT_IMAGES = ("seg", "mask", "brainmask", "label", "labels")


@dataclass(frozen=True)
class SubjectInputs:
    """One subject: name and modality -> NIfTI file or DICOM series folder."""

    name: str
    images: dict[str, Path]
    seg: Path | None = None
    folder: Path | None = field(default=None, compare=False)


def modality_of(name: str) -> str | None:
    """The modality a file/folder name or series description stands for, or None."""
    text = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    words = set(re.split(r"[^a-z0-9]+", text))
    if words & set(NOT_IMAGES):
        return None
    for modality, aliases in ALIASES.items():
        if words & set(aliases):
            return modality
    return None


def find_subject(folder: Path) -> SubjectInputs:
    """The four modalities of the subject in `folder`; BadInput naming what is missing."""
    found = _scan_subject(folder)
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        raise BadInput(f"{folder}: no {', '.join(missing)} image found (need t1n, t1c, t2w and "
                       "t2f: NIfTI files or DICOM series folders with those names)",
                       "name files like SUBJECT-t1c.nii.gz, or give --t1n/--t1c/--t2w/--t2f")
    return SubjectInputs(folder.name, found, folder=folder)


def find_cohort(folder: Path) -> list[SubjectInputs]:
    """`folder` as one subject, or as a cohort of subject folders (sorted by name)."""
    if not folder.is_dir():
        raise BadInput(f"{folder}: not a folder", "give a subject or cohort folder")
    if _scan_subject(folder):
        return [find_subject(folder)]
    subjects = [find_subject(sub) for sub in sorted(folder.iterdir())
                if sub.is_dir() and not sub.name.startswith(".") and _scan_subject(sub)]
    if not subjects:
        raise BadInput(f"{folder}: holds no subject (no t1n/t1c/t2w/t2f images in it or in its "
                       "subfolders)", "give a subject folder, a cohort folder, or --t1c FILE ...")
    return subjects


def _scan_subject(folder: Path) -> dict[str, Path]:
    found = _scan_named(folder)
    return found or _scan_series_descriptions(folder)


def _scan_series_descriptions(folder: Path) -> dict[str, Path]:
    """A PACS-style export: one folder (any layout below it) holding the four series, told apart
    by SeriesDescription. Each modality maps to `folder`; `read_scan` picks the series. Empty
    unless every modality found is described by exactly one series (so a cohort folder, holding
    several subjects' series, is not mistaken for one subject)."""
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    if any(entry.is_file() and is_nifti_path(entry) for entry in entries):
        return {}
    if any(entry.is_dir() and _scan_named(entry) for entry in entries):
        return {}  # a cohort of named subject folders
    from tumorcli.io.dicom import find_series

    try:
        series = find_series(folder)
    except BadInput:
        return {}
    described = [modality_of(s.description) for s in series]
    counts = {m: described.count(m) for m in MODALITIES if m in described}
    if not counts or any(count != 1 for count in counts.values()):
        return {}
    return {modality: folder for modality in counts}


def _scan_named(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        modality = modality_of(entry.name)
        if modality is None:
            continue
        is_series = entry.is_dir() and any(p.is_file() for p in entry.iterdir())
        if not (is_series or (entry.is_file() and is_nifti_path(entry))):
            continue
        if modality in found:
            raise BadInput(f"{folder}: two {modality} images ({found[modality].name} and "
                           f"{entry.name})", "keep one image per modality in a subject folder")
        found[modality] = entry
    return found


def read_scan(path: Path, modality: str) -> Volume:
    """A modality's scan: a NIfTI file, or a DICOM series folder (the series whose description
    names the modality when the folder holds several)."""
    if path.is_dir():
        from tumorcli.io.dicom import find_series, read_dicom_series

        series = find_series(path)
        if not series:
            raise BadInput(f"{path}: the {modality} folder holds no DICOM series",
                           "give a NIfTI file or a folder of DICOM files")
        chosen = None
        if len(series) > 1:
            named = [s for s in series if modality_of(s.description) == modality]
            if len(named) != 1:
                raise BadInput(f"{path}: {len(series)} series and not exactly one described as "
                               f"{modality}", "keep one series per folder")
            chosen = named[0].uid
        volume = read_dicom_series(path, chosen).volume
        return Volume(volume.array, volume.affine, source=str(path))
    return load_volume(path)


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's files (sorted relative names and contents)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
