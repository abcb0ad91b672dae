"""`tumor evaluate`: Dice, HD95, sensitivity and precision of predicted masks against references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Jobs, Json, Quiet, check_jobs, console, finish, start
from tumorcli.cli.sharding import (Merge, check_shard, merged_or_checked, shard_option,
                                   shard_pairs)
from tumorcli.cli.volumes import Labels, TableOutput

MAX_CASES_SHOWN = 10  # per-case rows on screen up to this many cases; means always
CaseShard = shard_option("the cases sorted by case id")
Tables = Annotated[Optional[list[Path]], typer.Argument(
    help="With --merge: the tables of the --shard runs.", show_default=False)]


def evaluate(
    tables: Tables = None,
    pred: Annotated[Optional[Path], typer.Option(
        "--pred", help="Predicted mask, or a folder of them (matched to --ref by case id).",
        show_default=False)] = None,
    ref: Annotated[Optional[Path], typer.Option(
        "--ref", help="Reference mask, or a folder of them (BraTS case folders with "
        "*-seg.nii.gz are searched below).", show_default=False)] = None,
    output: TableOutput = None,
    lesionwise: Annotated[bool, typer.Option(
        "--lesionwise", help="Add BraTS 2023 lesion-wise Dice and HD95 (26-connected lesions, "
        "3-voxel dilation, lesions ≤ 50 mm³ left out, 374 mm per missed or false-positive "
        "lesion).")] = False,
    labels: Labels = "1=NETC,2=SNFH,3=ET",
    jobs: Jobs = 1,
    shard: CaseShard = None,
    merge: Merge = False,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Score predicted label masks against references: TC, WT, ET and their means.

    CSV columns: case,region,dice,hd95_mm,sensitivity,precision (+ lesion-wise
    columns with --lesionwise), one row per case and region, then rows with case
    = "mean".

    Cases are matched by id: the file name without .nii/.nii.gz and a trailing
    -seg (BraTS-GLI-00001-000-seg.nii.gz → BraTS-GLI-00001-000). Prediction and
    reference must share shape and affine (within 0.001 mm).

    Conventions: HD95 = max of the two directed 95th percentiles of the
    distances (mm, voxel spacing) from each edge voxel of one mask to the
    nearest edge voxel of the other, as MONAI computes it. Both masks empty:
    dice, sensitivity and precision 1, HD95 0. Exactly one empty: dice,
    sensitivity and precision 0, HD95 373.13 mm (BraTS).

    A case found on one side only, or one that cannot be scored (different
    grids, not a label mask), is listed at the end: the other cases are written
    and the exit code is 3 (partial batch); if no case can be scored the exit
    code is 2.

    On a cluster, each array task scores one --shard of the cases (those found
    on one side only included) and --merge joins their tables: rows sorted by
    case, the "mean" rows recomputed over every case.

    Examples:
      tumor evaluate --pred pred.nii.gz --ref BraTS-GLI-00001-000-seg.nii.gz
      tumor evaluate --pred preds/ --ref BraTS2023-val/ -o metrics.csv --lesionwise -j 2
      tumor evaluate --pred preds/ --ref val/ --shard auto -o shard-$SLURM_ARRAY_TASK_ID.csv
      tumor evaluate --merge shard-*.csv -o metrics.csv
    """
    start(quiet, as_json)
    from functools import partial

    from tumorcli.cli.batch import Batch
    from tumorcli.metrics.cases import case_id, match_cases
    from tumorcli.metrics.evaluation import (COLUMNS, LESIONWISE_COLUMNS, TABLES, evaluate_files,
                                             mean_rows)
    from tumorcli.metrics.regions import parse_labels
    from tumorcli.metrics.tables import check_table_path, write_rows
    from tumorcli.progress import task

    if merged_or_checked(merge, tables, output, TABLES, "evaluate", quiet, as_json, pred, ref,
                         "masks", "tumor evaluate --pred preds/ --ref refs/", shard=shard):
        return
    scheme = parse_labels(labels)
    if output is not None:
        check_table_path(output)
    check_jobs(jobs)
    check_shard(shard)
    matched = shard_pairs(match_cases(pred, ref), shard, case_id)
    batch = Batch("evaluate", what="cases")
    batch.fail_unmatched(matched, case_id, pred, ref)
    scores, scored_cases = [], 0
    with task("Evaluating", total=len(matched.pairs)) as advance:
        scoring = partial(evaluate_files, scheme=scheme, lesionwise=lesionwise)
        for _, case_scores, error in batch.each(matched.pairs, scoring, name=lambda p: p[0],
                                                jobs=jobs, advance=advance):
            if error is None:
                scores += case_scores
                scored_cases += 1
    failures = batch.errors
    if not scores and failures:
        raise failures[0]  # an empty --shard has neither: it writes the header only
    rows = [s.row() for s in scores]
    means = mean_rows(scores)
    columns = COLUMNS + (LESIONWISE_COLUMNS if lesionwise else ())
    if output is not None:
        write_rows(output, columns, rows + means)
    result = {"cases": scored_cases, "lesionwise": lesionwise,
              "labels": scheme.describe(), "output": str(output) if output else None,
              "mean": means, "rows": rows, "failed": [str(f) for f in failures],
              "summary": batch.summary()}
    finish(result, as_json=as_json, quiet=quiet, human=lambda result: (_show(result),
                                                                       batch.show()))
    batch.raise_if_failed("not scored", f"; the scores of the other cases are in {output}"
                          if output else "")


def _show(result: dict) -> None:
    from rich import box
    from rich.table import Table

    rows = (result["rows"] if result["cases"] <= MAX_CASES_SHOWN else []) + result["mean"]
    overlap = Table("case", "region", "Dice", "HD95 mm", "sensitivity", "precision",
                    title=f"{result['cases']} case(s)", title_justify="left", box=box.SIMPLE_HEAD)
    for row in rows:
        overlap.add_row(row["case"], row["region"], f"{row['dice']:.3f}", f"{row['hd95_mm']:.2f}",
                        f"{row['sensitivity']:.3f}", f"{row['precision']:.3f}")
    console().print(overlap)
    if result["lesionwise"]:
        lesions = Table("case", "region", "Dice", "HD95 mm", "lesions", "found", "FP",
                        title="Lesion-wise (BraTS 2023; FP = false-positive lesions)",
                        title_justify="left",
                        box=box.SIMPLE_HEAD)
        for row in rows:
            lesions.add_row(row["case"], row["region"], f"{row['lesionwise_dice']:.3f}",
                            f"{row['lesionwise_hd95_mm']:.2f}", f"{row['lesions']:g}",
                            f"{row['lesions_detected']:g}", f"{row['false_positive_lesions']:g}")
        console().print(lesions)
    if result["output"]:
        console().print(f"[green]wrote[/] {result['output']}")
