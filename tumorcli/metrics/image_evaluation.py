"""Predicted MR images scored against real ones, case by case: finding and pairing the files,
reading them, PSNR/SSIM (`metrics.image`) and the mean and SD rows.

Case id of an image: the file name without .nii/.nii.gz and without a trailing modality suffix
(-t1c, -t1n, -t2w, -t2f, -t1ce, -t1gd, -t1, -t2, -flair; `-` or `_`):
`BraTS-GLI-00001-001-t1c.nii.gz` → case `BraTS-GLI-00001-001`, modality `t1c`. In a folder,
label masks (*-seg) and brain masks (*-brain, *-mask, *-brainmask) are not images.
A case with one image on a side uses it; a case with several (a BraTS case folder) uses the
modality asked for, else the prediction's own suffix. Brain masks: the file name without
.nii/.nii.gz and a trailing -brain, -mask or -brainmask gives the case id.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from tumorcli.errors import BadInput
from tumorcli.io.volume import is_nifti_path
from tumorcli.metrics.cases import CasePairs, case_id_stem
from tumorcli.metrics.image_regions import REGION_COLUMNS
from tumorcli.metrics.tables import TableLayout

COLUMNS = ("case", "psnr_3d", "ssim_3d", "psnr_slices", "ssim_slices", "psnr_3d_brain",
           "ssim_3d_brain", "psnr_slices_brain", "ssim_slices_brain")
_MODALITY = re.compile(r"[-_](t1c|t1n|t2w|t2f|t1ce|t1gd|t1|t2|flair)$", re.IGNORECASE)
_BRAIN_MASK = re.compile(r"[-_](brain[-_]?mask|brain|mask)$", re.IGNORECASE)
_LABEL_MASK = re.compile(r"[-_]seg$", re.IGNORECASE)


def image_case_id(path: str | Path) -> tuple[str, str]:
    """`…/BraTS-GLI-00001-001-t1c.nii.gz` → (`BraTS-GLI-00001-001`, `t1c`); no suffix → ''."""
    stem = case_id_stem(Path(path))
    found = _MODALITY.search(stem)
    return (stem[:found.start()], found.group(1).lower()) if found else (stem, "")


def brain_mask_case_id(path: str | Path) -> str:
    """`…/BraTS-GLI-00001-001-brain.nii.gz` → `BraTS-GLI-00001-001`."""
    return _BRAIN_MASK.sub("", case_id_stem(Path(path)))


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_nifti_path(p)
                  and not p.name.startswith("."))


def images_by_case(path: Path, option: str) -> dict[str, dict[str, Path]]:
    """{case id: {modality: file}} for a file or a folder (searched below) given to `option`."""
    if not path.exists():
        raise BadInput(f"{path}: not found", f"check the path given to {option}")
    if path.is_file():
        files = [path]
    else:
        files = [p for p in _nifti_files(path) if not _LABEL_MASK.search(case_id_stem(p))
                 and not _BRAIN_MASK.search(case_id_stem(p))]
    if not files:
        raise BadInput(f"{path}: holds no NIfTI images (*.nii.gz other than -seg/-brain masks)",
                       f"give {option} an image file or a folder of images")
    cases: dict[str, dict[str, Path]] = {}
    for file in files:
        case, modality = image_case_id(file)
        if modality in cases.setdefault(case, {}):
            raise BadInput(f"{file} and {cases[case][modality]}: both are case {case}"
                           + (f" ({modality})" if modality else ""),
                           f"keep one image per case and modality under {path}")
        cases[case][modality] = file
    return cases


def _pick(images: dict[str, Path], wanted: str | None, case: str, side: str) -> Path:
    """The one image of a case to score: the wanted modality, or the only one there is."""
    if wanted and wanted in images:
        return images[wanted]
    if len(images) == 1 and (not wanted or "" in images):
        return next(iter(images.values()))
    found = ", ".join(m or "no suffix" for m in sorted(images))
    if wanted:
        raise BadInput(f"case {case}: {side} has no {wanted} image (found {found})",
                       "name the modality with --modality, e.g. --modality t1c")
    raise BadInput(f"case {case}: {side} has {len(images)} images ({found})",
                   "name the modality with --modality, e.g. --modality t1c")


def match_images(prediction: Path, reference: Path, modality: str | None = None) -> CasePairs:
    """Pair predicted and real images by case id (see the module doc). Two files are one pair
    whatever their names; a file against a folder is looked up there by its case id."""
    predictions = images_by_case(prediction, "--pred")
    references = images_by_case(reference, "--ref")
    if prediction.is_file() and reference.is_file():
        return CasePairs([(image_case_id(reference)[0], prediction, reference)], [], [])
    wanted = modality.lower() if modality else None
    pairs = []
    for case in sorted(set(predictions) & set(references)):
        mine = _pick(predictions[case], wanted, case, str(prediction))
        pairs.append((case, mine, _pick(references[case], wanted or image_case_id(mine)[1],
                                        case, str(reference))))
    prediction_only = [p for c in sorted(predictions) if c not in references
                       for p in predictions[c].values()]
    reference_only = [p for c in sorted(references) if c not in predictions
                      for p in references[c].values()]
    if prediction.is_file():
        reference_only = []  # one prediction is checked against its own case only
    if reference.is_file():
        prediction_only = []
    return CasePairs(pairs, prediction_only, reference_only)


def brain_masks_by_case(path: Path) -> dict[str, Path]:
    """{case id: brain mask} of a folder: *-brain/*-mask files below it, else every NIfTI file
    directly in it. A single file is returned under the case id ''."""
    if not path.exists():
        raise BadInput(f"{path}: not found", "check the path given to --mask")
    if path.is_file():
        return {"": path}
    files = [p for p in _nifti_files(path) if _BRAIN_MASK.search(case_id_stem(p))]
    if not files:
        files = sorted(p for p in path.iterdir() if p.is_file() and is_nifti_path(p)
                       and not p.name.startswith("."))
    if not files:
        raise BadInput(f"{path}: holds no NIfTI brain masks", "give --mask a file or a folder")
    masks: dict[str, Path] = {}
    for file in files:
        case = brain_mask_case_id(file)
        if case in masks:
            raise BadInput(f"{file} and {masks[case]}: both are the brain mask of case {case}",
                           f"keep one brain mask per case under {path}")
        masks[case] = file
    return masks


def brain_mask_for(masks: dict[str, Path] | None, case: str) -> Path | None:
    """The brain mask of `case` from `brain_masks_by_case` (a single file serves every case);
    None without masks. BadInput when the folder has none for this case."""
    if masks is None:
        return None
    if "" in masks:
        return masks[""]
    if case not in masks:
        raise BadInput(f"case {case}: no brain mask in the --mask folder",
                       "name masks by case id, e.g. BraTS-GLI-00001-000-brain.nii.gz")
    return masks[case]


def labels_for(sources: list[Path], case: str) -> list[Path]:
    """The label files of `case` from --labels: a file serves every case, a folder gives the
    file `<case>-seg.nii(.gz)` found below it."""
    files = []
    for source in sources:
        if source.is_file():
            files.append(source)
            continue
        found = [p for p in _nifti_files(source) if case_id_stem(p) == f"{case}-seg"]
        if not found:
            raise BadInput(f"case {case}: no {case}-seg.nii.gz below the --labels folder "
                           f"{source}", "give the label files of the case with --labels FILE")
        files.append(found[0])
    return files


def _voxels_on_grid_of(path: Path, reference, hint: str) -> np.ndarray:
    """The voxels of the file at `path`; BadInput with `hint` unless it is on `reference`'s
    grid."""
    from tumorcli.io.volume import load_volume
    from tumorcli.metrics.evaluation import check_same_grid

    volume = load_volume(path)
    try:
        check_same_grid(volume, reference)
    except BadInput as error:
        raise BadInput(error.message, hint) from None
    return np.asarray(volume.array)


def label_union(paths: list[Path], reference) -> np.ndarray:
    """(X, Y, Z) bool: voxels labelled (> 0) in any of `paths`, each on `reference`'s grid."""
    union = np.zeros(reference.shape[:3], bool)
    for path in paths:
        union |= _voxels_on_grid_of(path, reference, "give tumour labels on the reference's "
                                    "grid (the sessions' -seg files)") > 0
    return union


def score_image_files(item: tuple[str, Path, Path, Path | None],
                      data_range: float | None = None, normalize: str = "none",
                      labels: list[Path] | None = None) -> dict:
    """The COLUMNS row of one (case, prediction, reference, brain mask or None) item, and the
    REGION_COLUMNS (tumour and rest of the brain) when tumour `labels` files are given.

    Brain: the mask's non-zero voxels, or the reference's non-zero voxels without a mask.
    normalize "percentile": each image is `percentile_normalised` in that brain first, and the
    data range defaults to 1. normalize "tissue" (needs labels): each image is divided by its
    median over the brain outside the labels (`tissue_normalised`).
    Raises BadInput naming the file for different grids, non-finite voxels, an image smaller
    than the SSIM window, an empty brain or a constant reference.
    """
    from tumorcli.io.volume import load_volume
    from tumorcli.metrics.evaluation import check_same_grid
    from tumorcli.metrics.image import WINDOW, image_scores, percentile_normalised

    case, prediction_path, reference_path, mask_path = item
    prediction, reference = load_volume(prediction_path), load_volume(reference_path)
    check_same_grid(prediction, reference)
    for volume in (prediction, reference):
        if not np.all(np.isfinite(volume.array)):
            raise BadInput(f"{volume.source}: holds NaN or infinite voxels",
                           "replace them (e.g. by 0) before scoring")
        if min(volume.shape) < WINDOW:
            raise BadInput(f"{volume.source}: shape {volume.shape} is smaller than the "
                           f"{WINDOW}-voxel SSIM window", "score whole 3D volumes")
    if mask_path is None:
        brain = reference.array != 0
    else:
        brain = _voxels_on_grid_of(mask_path, reference, "give the brain mask of this case, "
                                   "on the reference's grid") != 0
    where = mask_path or reference_path
    if not brain.any():
        raise BadInput(f"{where}: the brain is empty (no non-zero voxel)",
                       "give a brain mask with --mask")
    predicted, real = np.asarray(prediction.array), np.asarray(reference.array)
    tumour = label_union(labels, reference) if labels else None
    if normalize == "tissue":
        from tumorcli.metrics.image_regions import tissue_normalised

        if tumour is None:
            raise BadInput(f"case {case}: --normalize tissue needs the tumour labels",
                           "add --labels PRE-seg.nii.gz --labels POST-seg.nii.gz")
        predicted, real = (tissue_normalised(v, brain, tumour) for v in (predicted, real))
    if normalize == "percentile":
        predicted, real = (percentile_normalised(v, brain) for v in (predicted, real))
        data_range = 1.0 if data_range is None else data_range
    if data_range is None:
        for region, name in ((None, "image"), (brain, "brain")):
            values = real if region is None else real[region]
            if values.max() == values.min():
                raise BadInput(f"{reference_path}: the reference {name} is constant, so "
                               "PSNR/SSIM have no data range", "give --data-range")
    scores = image_scores(predicted, real, brain, data_range)
    if tumour is not None:
        from tumorcli.metrics.image_regions import region_scores

        scores.update(region_scores(predicted, real, brain, tumour, data_range))
    return {"case": case, **scores}


def summary_rows(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> list[dict]:
    """Rows with case = "mean" and case = "sd" (sample SD, ddof 1; None for one case or a
    non-finite value) of each score column."""
    mean, sd = {"case": "mean"}, {"case": "sd"}
    for column in columns[1:]:
        values = np.array([row[column] for row in rows], dtype=np.float64)
        mean[column] = float(values.mean())
        spread = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        sd[column] = spread if np.isfinite(spread) else None
    return [mean, sd]


# The two tables `tumor evaluate-image` writes (without and with --labels), for --merge.
TABLES = tuple(TableLayout(columns, ("case",), summary=partial(summary_rows, columns=columns))
               for columns in (COLUMNS, COLUMNS + REGION_COLUMNS))
