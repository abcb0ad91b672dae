"""`tumor volumes`: tumour volumes (cm³) per region of label masks, or over a subject's sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Jobs, Json, Quiet, check_jobs, console, finish, start
from tumorcli.cli.sharding import (Merge, check_merge, check_shard, merge_shard_tables,
                                   shard_option, take_shard)

Masks = Annotated[Optional[list[Path]], typer.Argument(
    help="Label masks (.nii/.nii.gz), or folders of them (*-seg.nii.gz found below); with "
    "--merge, the shards' tables.", show_default=False)]
TableOutput = Annotated[Optional[Path], typer.Option(
    "-o", "--output", help="Write the table to a .csv or .json file.")]
Labels = Annotated[str, typer.Option(
    "--labels", help="Mask value of each class: NETC (necrosis), SNFH (oedema), ET (enhancing); "
    "e.g. 1=NETC,2=SNFH,4=ET for BraTS 2021 masks.")]
Subject = Annotated[Optional[Path], typer.Option(
    "--subject", help="Folder of session folders (BraTS-GLI-00001-000/…-seg.nii.gz, …-001, …) "
    "or of the *-seg.nii.gz files themselves, for one subject or several: volumes per session, "
    "change vs each subject's first session and a RANO-style response. Days come from a "
    "cohort.csv (subject,session,day) in the folder or its parent.", show_default=False)]
Shard = shard_option("the masks sorted by case id (with --subject: of the subjects)")


def volumes(
    masks: Masks = None,
    output: TableOutput = None,
    labels: Labels = "1=NETC,2=SNFH,3=ET",
    subject: Subject = None,
    jobs: Jobs = 1,
    shard: Shard = None,
    merge: Merge = False,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Tumour volumes in cm³ of NETC, SNFH, ET, TC (NETC + ET) and WT (all).

    volume = voxels × |det(affine[:3,:3])| / 1000, right for oblique and
    anisotropic grids. CSV columns: file,region,voxels,volume_cm3.

    With --subject: one row per session with the change vs the first session
    (baseline) and a RANO-style response from the enhancing tumour (ET) volume:
    ET ≥ +25 % over the nadir (smallest ET so far) or ET back after none →
    progression; else ET ≤ −50 % vs baseline → partial response, no ET left →
    complete response, else stable. A baseline without ET has no % change: ET
    appearing later → progression, none → stable. Volumetric only (no clinical
    or T2/FLAIR criteria).

    In a batch, masks that cannot be read are listed at the end and the exit
    code is 3; the others are still measured and written.

    On a cluster, each array task measures one --shard and --merge joins
    their tables (rows sorted by file, or by subject with --subject).

    Examples:
      tumor volumes BraTS-GLI-00001-000-seg.nii.gz
      tumor volumes cohort/ -o volumes.csv --jobs 2
      tumor volumes --subject cohort/ -o course.csv
      tumor volumes cohort/ --shard auto -o shard-$SLURM_ARRAY_TASK_ID.csv
      tumor volumes --merge shard-*.csv -o volumes.csv
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput
    from tumorcli.metrics.regions import parse_labels
    from tumorcli.metrics.tables import check_table_path

    if merge:
        from tumorcli.metrics.volumes import TABLES

        check_merge(masks, output, subject=subject, shard=shard)
        return merge_shard_tables(masks, output, TABLES, "volumes", quiet, as_json)
    scheme = parse_labels(labels)
    if output is not None:
        check_table_path(output)
    check_jobs(jobs)
    check_shard(shard)
    if (subject is None) == (not masks):
        raise BadInput("give label masks or --subject DIR (one of the two)",
                       "e.g. tumor volumes seg.nii.gz, or tumor volumes --subject DIR")
    if subject is not None:
        _subject(subject, scheme, output, jobs, shard, quiet, as_json)
    else:
        _masks(masks, scheme, output, jobs, shard, quiet, as_json)


def _masks(masks: list[Path], scheme, output: Path | None, jobs: int, shard: str | None,
           quiet: bool, as_json: bool) -> None:
    from functools import partial

    from tumorcli.cli.batch import Batch
    from tumorcli.errors import BadInput
    from tumorcli.metrics.cases import case_id, find_masks
    from tumorcli.metrics.tables import write_rows
    from tumorcli.metrics.volumes import VOLUME_COLUMNS, region_volumes
    from tumorcli.progress import task

    files: list[Path] = []
    for path in masks:
        if path.is_dir():
            found = find_masks(path)
            if not found:
                raise BadInput(f"{path}: holds no NIfTI label masks", "give mask files or folders")
            files += found
        else:
            files.append(path)
    files = take_shard(files, shard, key=lambda path: (case_id(path), str(path)))
    rows, batch = [], Batch("volumes", what="masks")
    with task("Measuring", total=len(files)) as advance:
        measuring = batch.each(files, partial(region_volumes, scheme=scheme), name=str,
                               jobs=jobs, advance=advance)
        for path, measured, error in measuring:
            if error is None:
                rows += [{"file": str(path), "region": region, "voxels": voxels,
                          "volume_cm3": cm3} for region, (voxels, cm3) in measured.items()]
    failures = batch.errors
    if failures and len(failures) == len(files):
        raise failures[0]  # nothing measured: a bad input, and nothing printed or written
    if output is not None:
        write_rows(output, VOLUME_COLUMNS, rows)
    result = {"labels": scheme.describe(), "output": str(output) if output else None,
              "masks": len(files) - len(failures), "failed": [str(f) for f in failures],
              "rows": rows, "summary": batch.summary()}
    finish(result, as_json=as_json, quiet=quiet,
           human=lambda result: (_show_volumes(result), batch.show()))
    _raise_for_failures(batch, output)


def _subject(folder: Path, scheme, output: Path | None, jobs: int, shard: str | None,
             quiet: bool, as_json: bool) -> None:
    from functools import partial

    from tumorcli.cli.batch import Batch
    from tumorcli.metrics.tables import write_rows
    from tumorcli.metrics.volumes import (SESSION_COLUMNS, cohort_days, find_sessions,
                                          region_volumes, session_rows)
    from tumorcli.progress import task

    sessions = find_sessions(folder)
    if shard is not None:  # whole subjects: the change vs baseline needs all their sessions
        subjects = set(take_shard(sorted({s.subject for s in sessions}), shard, key=str))
        sessions = [session for session in sessions if session.subject in subjects]
    days, cohort_csv = cohort_days(folder)
    measured, batch = [], Batch("volumes", what="masks")
    with task("Measuring sessions", total=len(sessions)) as advance:
        paths = [session.path for session in sessions]
        measuring = batch.each(paths, partial(region_volumes, scheme=scheme), name=str,
                               jobs=jobs, advance=advance)
        for session, (_, volumes, error) in zip(sessions, measuring):
            if error is not None:
                continue
            session.volumes_cm3 = {region: cm3 for region, (_, cm3) in volumes.items()}
            session.day = days.get((session.subject, session.session))
            measured.append(session)
    failures = batch.errors
    if failures and len(failures) == len(sessions):
        raise failures[0]  # nothing measured: a bad input, and nothing printed or written
    rows = session_rows(measured)
    if output is not None:
        write_rows(output, SESSION_COLUMNS, rows)
    result = {"labels": scheme.describe(), "subject_folder": str(folder),
              "cohort_csv": str(cohort_csv) if cohort_csv else None,
              "output": str(output) if output else None, "sessions": rows,
              "failed": [str(f) for f in failures], "summary": batch.summary()}
    finish(result, as_json=as_json, quiet=quiet,
           human=lambda result: (_show_sessions(result), batch.show()))
    _raise_for_failures(batch, output)


def _raise_for_failures(batch, output: Path | None) -> None:
    """Exit 3 (partial batch) when some masks failed and the others were measured."""
    measured = batch.summary()["done"]
    batch.raise_if_failed("could not be measured",
                          f"; the other {measured} are in {output}" if output else "")


def _show_volumes(result: dict) -> None:
    from rich.table import Table

    table = Table("file", "region", "voxels", "volume cm³", title_justify="left",
                  title=f"Tumour volumes (labels {result['labels']})")
    for row in result["rows"]:
        table.add_row(Path(row["file"]).name, row["region"], str(row["voxels"]),
                      f"{row['volume_cm3']:.3f}")
    console().print(table)
    if result["output"]:
        console().print(f"[green]wrote[/] {result['output']}")


def _show_sessions(result: dict) -> None:
    from rich.table import Table

    def cm3(value):
        return f"{value:.2f}"

    def change(value):
        return "—" if value is None else f"{value:+.0f} %"

    subjects = sorted({row["subject"] for row in result["sessions"]})
    several = len(subjects) > 1
    headings = ["session", "day", "ET cm³", "TC cm³", "WT cm³", "ΔET", "ΔWT", "response"]
    table = Table(*(["subject"] if several else []), *headings, title_justify="left",
                  title=f"{subjects[0] if len(subjects) == 1 else 'Tumour volumes'}: per session, "
                  "Δ = change vs the first session")
    for row in result["sessions"]:
        cells = [row["session"], "" if row["day"] is None else str(row["day"]),
                 cm3(row["et_cm3"]), cm3(row["tc_cm3"]), cm3(row["wt_cm3"]),
                 change(row["et_change_pct"]), change(row["wt_change_pct"]), row["response"]]
        table.add_row(*([row["subject"]] if several else []), *cells)
    console().print(table)
    if result["output"]:
        console().print(f"[green]wrote[/] {result['output']}")
