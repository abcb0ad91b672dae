"""`tumor evaluate-image`: PSNR and SSIM of predicted MR images against the real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Json, Quiet, console, finish, start
from tumorcli.cli.volumes import TableOutput

MAX_CASES_SHOWN = 10  # per-case rows on screen up to this many cases; mean and SD always


def evaluate_image(
    pred: Annotated[Path, typer.Option(
        "--pred", help="Predicted image, or a folder of them (matched to --ref by case id).",
        show_default=False)],
    ref: Annotated[Path, typer.Option(
        "--ref", help="Real image, or a folder of them (BraTS case folders are searched "
        "below).", show_default=False)],
    mask: Annotated[Optional[Path], typer.Option(
        "--mask", help="Brain mask (non-zero = brain), or a folder of them matched by case id "
        "(…-brain.nii.gz). Default: the reference's non-zero voxels.")] = None,
    output: TableOutput = None,
    data_range: Annotated[Optional[float], typer.Option(
        "--data-range", help="Intensity range (peak) for PSNR and SSIM. Default: the "
        "reference's max − min over the image (or the brain, for the _brain scores).")] = None,
    normalize: Annotated[str, typer.Option(
        "--normalize", help="none: score raw intensities. percentile: first map each image's "
        "brain 0.5–99.5th percentiles to 0–1 (clipped, 0 outside the brain; data range 1), "
        "so a different scanner gain between sessions is not scored as error.")] = "none",
    modality: Annotated[Optional[str], typer.Option(
        "--modality", help="Which image of a case holding several (t1c, t1n, t2w, t2f, …). "
        "Default: the prediction's file-name suffix.")] = None,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Score predicted MR images against the real ones: PSNR (dB) and SSIM, whole and in the brain.

    CSV columns: case,psnr_3d,ssim_3d,psnr_slices,ssim_slices,psnr_3d_brain,
    ssim_3d_brain,psnr_slices_brain,ssim_slices_brain; one row per case, then a
    "mean" row and an "sd" row (sample SD; empty for one case).

    _3d: the whole volume. _slices: the mean over axial slices holding brain
    of each slice's 2D score. _brain: scored inside the brain only (PSNR over
    brain voxels; SSIM over windows centred on them).

    Cases are matched by id: the file name without .nii/.nii.gz and a trailing
    modality suffix (BraTS-GLI-00001-001-t1c.nii.gz → BraTS-GLI-00001-001). A
    case with several images (a BraTS case folder) is scored on --modality, or
    on the prediction's own suffix. Prediction and reference must share shape
    and affine (within 0.001 mm).

    Conventions: SSIM as MONAI's SSIMMetric (Gaussian window 11 voxels, σ 1.5,
    K1 0.01, K2 0.03, windows inside the image only). Identical images: PSNR
    inf. A case found on one side only, or one that cannot be scored, is listed
    at the end: the other cases are written and the exit code is 3; if no case
    can be scored the exit code is 2.

    Examples:
      tumor evaluate-image --pred pred-t1c.nii.gz --ref BraTS-GLI-00001-001-t1c.nii.gz
      tumor evaluate-image --pred preds/ --ref followups/ --modality t1c -o image_scores.csv
      tumor evaluate-image --pred post.nii.gz --ref followup-t1c.nii.gz --normalize percentile
    """
    start(quiet, as_json)
    from functools import partial

    from tumorcli.errors import BadInput, PartialBatch, TumorError
    from tumorcli.metrics.batch import run_each
    from tumorcli.metrics.image_evaluation import (COLUMNS, brain_mask_for, brain_masks_by_case,
                                                   match_images, score_image_files, summary_rows)
    from tumorcli.metrics.tables import check_table_path, write_rows
    from tumorcli.progress import task

    if output is not None:
        check_table_path(output)
    if normalize not in ("none", "percentile"):
        raise BadInput(f"--normalize {normalize}: unknown", "use none or percentile")
    if data_range is not None and not data_range > 0:
        raise BadInput(f"--data-range {data_range:g}: must be positive",
                       "e.g. --data-range 1 for images scaled to [0, 1]")
    matched = match_images(pred, ref, modality)
    masks = brain_masks_by_case(mask) if mask is not None else None
    failures: list[TumorError] = [
        BadInput(f"{path}: case has no reference in {ref}", "check the case ids")
        for path in matched.prediction_only] + [
        BadInput(f"{path}: case has no prediction in {pred}", "check the case ids")
        for path in matched.reference_only]
    items = []
    for case, prediction, reference in matched.pairs:
        try:
            items.append((case, prediction, reference, brain_mask_for(masks, case)))
        except TumorError as error:
            failures.append(error)
    rows = []
    with task("Scoring images", total=len(items)) as advance:
        scoring = partial(score_image_files, data_range=data_range, normalize=normalize)
        for row, error in run_each(scoring, items, 1, advance):
            if error is not None:
                failures.append(error)
            else:
                rows.append(row)
    if not rows:
        raise failures[0]
    summary = summary_rows(rows)
    if output is not None:
        to_write = rows + summary
        write_rows(output, COLUMNS, _json_safe(to_write) if output.suffix.lower() == ".json"
                   else to_write)
    result = {"cases": len(rows), "output": str(output) if output else None,
              "mean": _json_safe(summary[:1])[0], "sd": _json_safe(summary[1:])[0],
              "rows": _json_safe(rows), "failed": [str(f) for f in failures]}
    finish(result, as_json=as_json, quiet=quiet, human=_show)
    if failures:
        total = len(rows) + len(failures)
        written = f"; the scores of the other cases are in {output}" if output else ""
        raise PartialBatch(f"{len(failures)} of {total} cases not scored, first: "
                           f"{failures[0].message}{written}", failures[0].hint)


def _json_safe(rows: list[dict]) -> list[dict]:
    """Strict JSON has no infinity or NaN: write them as the strings "inf", "-inf", "nan"."""
    import math

    return [{k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in row.items()} for row in rows]


def _show(result: dict) -> None:
    from rich import box
    from rich.table import Table

    from tumorcli.metrics.image_evaluation import COLUMNS

    rows = result["rows"] if result["cases"] <= MAX_CASES_SHOWN else []
    table = Table("case", "PSNR dB", "SSIM", "PSNR slices", "SSIM slices", "PSNR brain",
                  "SSIM brain", "PSNR brain slices", "SSIM brain slices",
                  title=f"{result['cases']} case(s)", title_justify="left", box=box.SIMPLE_HEAD)
    for row in [*rows, result["mean"], result["sd"]]:
        table.add_row(row["case"], *(_number(row[column], column) for column in COLUMNS[1:]))
    console().print(table)
    if result["output"]:
        console().print(f"[green]wrote[/] {result['output']}")


def _number(value, column: str) -> str:
    if value is None or isinstance(value, str):
        return "–" if value is None else value
    return f"{value:.2f}" if column.startswith("psnr") else f"{value:.4f}"
