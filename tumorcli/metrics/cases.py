"""Finding label masks and pairing predictions with references by case id (BraTS naming).

The case id of `BraTS-GLI-00001-000-seg.nii.gz` (or `BraTS-GLI-00001-000.nii.gz`) is
`BraTS-GLI-00001-000`: the file name without `.nii`/`.nii.gz` and without a trailing `-seg`
or `_seg`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tumorcli.errors import BadInput
from tumorcli.io.volume import is_nifti_path

_SEG_SUFFIX = re.compile(r"[-_]seg$", re.IGNORECASE)


def case_id(path: str | Path) -> str:
    """`…/BraTS-GLI-00001-000-seg.nii.gz` → `BraTS-GLI-00001-000`."""
    name = Path(path).name
    for extension in (".nii.gz", ".nii"):
        if name.lower().endswith(extension):
            name = name[: -len(extension)]
            break
    return _SEG_SUFFIX.sub("", name)


def find_masks(folder: Path) -> list[Path]:
    """Label masks in `folder`: every `*-seg.nii[.gz]` below it (BraTS case folders); when there
    is none, every NIfTI file directly in it (a folder of predictions)."""
    masks = sorted(p for p in folder.rglob("*") if p.is_file() and is_nifti_path(p)
                   and _SEG_SUFFIX.search(case_id_stem(p)) and not p.name.startswith("."))
    if not masks:
        masks = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_path(p)
                       and not p.name.startswith("."))
    return masks


def case_id_stem(path: Path) -> str:
    """The file name without .nii/.nii.gz (keeps a -seg suffix)."""
    name = path.name
    for extension in (".nii.gz", ".nii"):
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return name


def masks_by_case(path: Path, option: str) -> dict[str, Path]:
    """{case id: file} for a file or a folder given to `option`; BadInput for a missing path, an
    empty folder or two files with one case id."""
    if not path.exists():
        raise BadInput(f"{path}: not found", f"check the path given to {option}")
    files = [path] if path.is_file() else find_masks(path)
    if not files:
        raise BadInput(f"{path}: holds no NIfTI label masks (*-seg.nii.gz or *.nii.gz)",
                       f"give {option} a mask file or a folder of masks")
    cases: dict[str, Path] = {}
    for file in files:
        case = case_id(file)
        if case in cases:
            raise BadInput(f"{file} and {cases[case]}: both are case {case}",
                           f"keep one mask per case under {path}")
        cases[case] = file
    return cases


@dataclass(frozen=True)
class CasePairs:
    """Predictions matched to references, and the cases found on one side only."""

    pairs: list[tuple[str, Path, Path]]  # (case id, prediction, reference)
    prediction_only: list[Path]
    reference_only: list[Path]


def match_cases(prediction: Path, reference: Path) -> CasePairs:
    """Pair prediction and reference masks by case id. Two files are one pair whatever their
    names; a file against a folder is looked up in the folder by its case id."""
    predictions = masks_by_case(prediction, "--pred")
    references = masks_by_case(reference, "--ref")
    if prediction.is_file() and reference.is_file():
        return CasePairs([(case_id(reference), prediction, reference)], [], [])
    pairs = [(case, predictions[case], references[case])
             for case in sorted(predictions) if case in references]
    prediction_only = [predictions[c] for c in sorted(predictions) if c not in references]
    reference_only = [references[c] for c in sorted(references) if c not in predictions]
    if prediction.is_file():
        reference_only = []  # one prediction is checked against its own case only
    if reference.is_file():
        prediction_only = []
    return CasePairs(pairs, prediction_only, reference_only)
