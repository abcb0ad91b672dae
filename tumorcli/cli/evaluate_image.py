"""`tumor evaluate-image`: PSNR and SSIM of predicted MR images against the real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Json, Quiet, console, finish, start
from tumorcli.cli.evaluate import CaseShard, Tables
from tumorcli.cli.sharding import Merge, check_shard, merged_or_checked, shard_pairs
from tumorcli.cli.volumes import TableOutput

MAX_CASES_SHOWN = 10  # per-case rows on screen up to this many cases; mean and SD always


def evaluate_image(
    tables: Tables = None,
    pred: Annotated[Optional[Path], typer.Option(
        "--pred", help="Predicted image, or a folder of them (matched to --ref by case id).",
        show_default=False)] = None,
    ref: Annotated[Optional[Path], typer.Option(
        "--ref", help="Real image, or a folder of them (BraTS case folders are searched "
        "below).", show_default=False)] = None,
    mask: Annotated[Optional[Path], typer.Option(
        "--mask", help="Brain mask (non-zero = brain), or a folder of them matched by case id "
        "(…-brain.nii.gz). Default: the reference's non-zero voxels.")] = None,
    output: TableOutput = None,
    data_range: Annotated[Optional[float], typer.Option(
        "--data-range", help="Intensity range (peak) for PSNR and SSIM. Default: the "
        "reference's max − min over the image (or the brain, for the _brain scores).")] = None,
    normalize: Annotated[str, typer.Option(
        "--normalize", help="none: score raw intensities. tissue (needs --labels): first "
        "divide each image by its median over normal tissue (brain voxels labelled in no "
        "--labels file), so a different scanner gain between sessions is not scored as error "
        "and the tumour's own change does not move the match. percentile: map each image's "
        "brain 0.5–99.5th percentiles to 0–1 (clipped; data range 1).")] = "none",
    labels: Annotated[Optional[list[Path]], typer.Option(
        "--labels", help="Tumour labels (repeatable: e.g. the pre-treatment and the follow-up "
        "-seg file; a folder gives each case's <case>-seg.nii.gz). Adds the scores around the "
        "tumour (labels of any file, dilated 3 voxels) and in the rest of the brain.",
        show_default=False)] = None,
    modality: Annotated[Optional[str], typer.Option(
        "--modality", help="Which image of a case holding several (t1c, t1n, t2w, t2f, …). "
        "Default: the prediction's file-name suffix.")] = None,
    shard: CaseShard = None,
    merge: Merge = False,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Score predicted MR images against the real ones: PSNR (dB) and SSIM, whole and in the brain.

    CSV columns: case,psnr_3d,ssim_3d,psnr_slices,ssim_slices,psnr_3d_brain,
    ssim_3d_brain,psnr_slices_brain,ssim_slices_brain (with --labels also
    psnr_3d_tumour,ssim_3d_tumour,psnr_3d_rest,ssim_3d_rest, on the brain's data
    range); one row per case, then a "mean" row and an "sd" row (sample SD; empty
    for one case).

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

    On a cluster, each array task scores one --shard of the cases and --merge
    joins their tables: rows sorted by case, "mean" and "sd" recomputed.

    Examples:
      tumor evaluate-image --pred pred-t1c.nii.gz --ref BraTS-GLI-00001-001-t1c.nii.gz
      tumor evaluate-image --pred preds/ --ref followups/ --modality t1c -o image_scores.csv
      tumor evaluate-image --pred post.nii.gz --ref followup-t1c.nii.gz --normalize tissue \\
          --labels pre-seg.nii.gz --labels followup-seg.nii.gz
      tumor evaluate-image --pred preds/ --ref followups/ --modality t1c --shard auto \\
          -o shard-$SLURM_ARRAY_TASK_ID.csv
      tumor evaluate-image --merge shard-*.csv -o image_scores.csv
    """
    start(quiet, as_json)
    from tumorcli.cli.batch import Batch
    from tumorcli.errors import BadInput, TumorError
    from tumorcli.metrics.image_evaluation import (COLUMNS, TABLES, brain_mask_for,
                                                   brain_masks_by_case, image_case_id,
                                                   labels_for, match_images, score_image_files,
                                                   summary_rows)
    from tumorcli.metrics.image_regions import REGION_COLUMNS
    from tumorcli.metrics.tables import check_table_path, json_safe, write_rows
    from tumorcli.progress import task

    if merged_or_checked(merge, tables, output, TABLES, "evaluate-image", quiet, as_json, pred,
                         ref, "images", "tumor evaluate-image --pred preds/ --ref followups/",
                         mask=mask, labels=labels, shard=shard):
        return
    check_shard(shard)
    if output is not None:
        check_table_path(output)
    if normalize not in ("none", "tissue", "percentile"):
        raise BadInput(f"--normalize {normalize}: unknown", "use none, tissue or percentile")
    if normalize == "tissue" and not labels:
        raise BadInput("--normalize tissue needs the tumour labels of both sessions",
                       "add --labels PRE-seg.nii.gz --labels FOLLOWUP-seg.nii.gz")
    for path in labels or []:
        if not path.exists():
            raise BadInput(f"{path}: --labels not found", "check the path")
    columns = COLUMNS + (REGION_COLUMNS if labels else ())
    if data_range is not None and not data_range > 0:
        raise BadInput(f"--data-range {data_range:g}: must be positive",
                       "e.g. --data-range 1 for images scaled to [0, 1]")
    case_of = lambda path: image_case_id(path)[0]
    matched = shard_pairs(match_images(pred, ref, modality), shard, case_of)
    masks = brain_masks_by_case(mask) if mask is not None else None
    batch = Batch("evaluate-image", what="cases")
    batch.fail_unmatched(matched, case_of, pred, ref)
    items = []
    for case, prediction, reference in matched.pairs:
        try:
            items.append((case, prediction, reference, brain_mask_for(masks, case),
                          labels_for(labels, case) if labels else None))
        except TumorError as error:
            batch.fail(case, error)
    rows = []
    with task("Scoring images", total=len(items)) as advance:
        scoring = lambda item: score_image_files(item[:4], data_range=data_range,
                                                 normalize=normalize, labels=item[4])
        for _, row, error in batch.each(items, scoring, name=lambda item: item[0],
                                        advance=advance):
            if error is None:
                rows.append(row)
    failures = batch.errors
    if not rows and failures:
        raise failures[0]  # an empty --shard has neither: it writes the header only
    summary = summary_rows(rows, columns) if rows else []
    if output is not None:
        to_write = rows + summary
        write_rows(output, columns, json_safe(to_write) if output.suffix.lower() == ".json"
                   else to_write)
    result = {"cases": len(rows), "output": str(output) if output else None,
              "mean": (json_safe(summary[:1]) or [None])[0],
              "sd": (json_safe(summary[1:]) or [None])[0],
              "rows": json_safe(rows), "failed": [str(f) for f in failures],
              "summary": batch.summary()}
    finish(result, as_json=as_json, quiet=quiet, human=lambda result: (_show(result),
                                                                       batch.show()))
    batch.raise_if_failed("not scored", f"; the scores of the other cases are in {output}"
                          if output else "")


def _show(result: dict) -> None:
    from rich import box
    from rich.table import Table

    from tumorcli.metrics.image_evaluation import COLUMNS
    from tumorcli.metrics.image_regions import REGION_COLUMNS

    rows = result["rows"] if result["cases"] <= MAX_CASES_SHOWN else []
    regions = REGION_COLUMNS[0] in (result["mean"] or {})
    columns = COLUMNS[1:] + (REGION_COLUMNS if regions else ())
    titles = ["PSNR dB", "SSIM", "PSNR slices", "SSIM slices", "PSNR brain", "SSIM brain",
              "PSNR brain slices", "SSIM brain slices"]
    titles += ["PSNR tumour", "SSIM tumour", "PSNR rest", "SSIM rest"] if regions else []
    table = Table("case", *titles, title=f"{result['cases']} case(s)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for row in [*rows, *(summary for summary in (result["mean"], result["sd"]) if summary)]:
        table.add_row(row["case"], *(_number(row[column], column) for column in columns))
    console().print(table)
    if result["output"]:
        console().print(f"[green]wrote[/] {result['output']}")


def _number(value, column: str) -> str:
    if value is None or isinstance(value, str):
        return "–" if value is None else value
    return f"{value:.2f}" if column.startswith("psnr") else f"{value:.4f}"
