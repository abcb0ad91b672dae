"""`tumor preprocess`: scanner NIfTI/DICOM -> co-registered, skull-stripped, normalised volumes;
`--invert` carries a mask from preprocessed space back onto a native scan."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Json, Quiet, Seed, console, finish, start


class Normalisation(str, Enum):
    zscore = "zscore"
    percentile = "percentile"
    none = "none"


ModalityFile = Optional[Path]


def preprocess(
    input: Annotated[Optional[Path], typer.Option(
        "-i", "--input", help="Subject folder (files or DICOM series folders named "
        "t1n/t1c/t2w/t2f, BraTS names work), or a cohort folder of subject folders.",
        show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output folder (one subfolder per subject); with --invert, the "
        "native-space NIfTI to write.", show_default=False)] = None,
    t1n: Annotated[ModalityFile, typer.Option("--t1n", help="Native T1 (file or DICOM folder).",
                                              show_default=False)] = None,
    t1c: Annotated[ModalityFile, typer.Option("--t1c", help="Contrast-enhanced T1: the "
                                              "reference all others are registered to.",
                                              show_default=False)] = None,
    t2w: Annotated[ModalityFile, typer.Option("--t2w", help="T2-weighted.",
                                              show_default=False)] = None,
    t2f: Annotated[ModalityFile, typer.Option("--t2f", help="T2-FLAIR.",
                                              show_default=False)] = None,
    subject: Annotated[Optional[str], typer.Option(
        "--subject", help="Subject name for --t1c ... files (default: from the T1c file name).",
        show_default=False)] = None,
    atlas: Annotated[str, typer.Option(
        "--atlas", help="sri24 (BraTS's atlas grid, shipped), mni (ICBM 2009a, 197×233×189 "
        "at 1 mm, shipped), none (stay on the T1c grid, "
        "reoriented to RAS), or a T1 template .nii.gz (its brain mask as "
        "NAME-brainmask.nii.gz next to it).")] = "sri24",
    skull_strip: Annotated[bool, typer.Option(
        "--skull-strip/--no-skull-strip", help="Zero everything outside the brain mask.")] = True,
    n4: Annotated[bool, typer.Option("--n4/--no-n4", help="N4 bias-field correction.")] = True,
    crop: Annotated[bool, typer.Option(
        "--crop/--no-crop", help="Crop to the brain's box plus --crop-margin (recorded; "
        "--invert undoes it).")] = False,
    crop_margin: Annotated[float, typer.Option(
        "--crop-margin", help="mm around the brain.")] = 10.0,
    normalize: Annotated[Normalisation, typer.Option(
        "--normalize", help="zscore inside the brain, percentile (0.5–99.5 % → 0..1) or "
        "none.")] = Normalisation.zscore,
    spacing: Annotated[Optional[float], typer.Option(
        "--spacing", help="Output voxel size in mm (default: 1 on the atlas; the T1c's own "
        "grid with --atlas none).", show_default=False)] = None,
    seg: Annotated[Optional[Path], typer.Option(
        "--seg", help="A label mask drawn on the native T1c: carried to the output with "
        "nearest neighbour (single subject only).", show_default=False)] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Subjects in parallel.")] = 1,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", help="I/N: process only part I of N (1-based) of the sorted cohort, for "
        "cluster arrays; auto: the part of this SLURM array task.", show_default=False)] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="A modality that fails the co-registration check is an error for its "
        "subject (nothing written) instead of a warning.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a subject folder made from other inputs or options "
        "(matching ones are always skipped).")] = False,
    invert: Annotated[Optional[Path], typer.Option(
        "--invert", help="A mask or map in preprocessed space to carry back to a native grid "
        "(needs --record and -o).", show_default=False)] = None,
    record: Annotated[Optional[Path], typer.Option(
        "--record", help="The subject's preprocess.json (with --invert).",
        show_default=False)] = None,
    onto: Annotated[str, typer.Option(
        "--onto", help="With --invert: the native scan whose grid to land on.")] = "t1c",
    seed: Seed = 1,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Preprocess scanner images the BraTS way: co-register to the T1c, register to the
    atlas, brain mask, N4, (crop), normalise. Invertible and resumable.

    Writes OUT/<subject>/<subject>-{t1n,t1c,t2w,t2f,brainmask}.nii.gz, transforms/*.tfm
    (output mm -> native mm) and preprocess.json (inputs with sha256, every step with its
    parameters and seconds, transforms, crop box, versions). A subject whose folder already
    matches its inputs and options is skipped; one that fails does not stop the others
    (exit code 3); OUT/logs/<subject>.log gets a line per outcome. Each co-registration is
    checked (head overlap and edge agreement, no ground truth needed): a modality that fails is
    written with a warning (yellow row, "warnings" in preprocess.json, exit code 3), or is an
    error with --strict.

    Examples:
      tumor preprocess -i BraTS-GLI-00001-000 -o prep
      tumor preprocess --t1c t1c.nii.gz --t2f flair.nii.gz -o prep --atlas none
      tumor preprocess -i cohort -o prep --jobs 2 --shard 1/4
      tumor preprocess --invert pred.nii.gz --record prep/S1/preprocess.json -o pred-native.nii.gz
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput

    if output is None:
        raise BadInput("-o/--output is missing", "give the output folder (or file with --invert)")
    if invert is not None:
        _invert(invert, record, output, onto, quiet, as_json)
        return
    if jobs < 1:
        raise BadInput(f"--jobs {jobs}: must be at least 1", "e.g. --jobs 2 on a 2-core machine")
    if spacing is not None and not 0.2 <= spacing <= 8:
        raise BadInput(f"--spacing {spacing}: outside 0.2–8 mm", "e.g. --spacing 1")
    from tumorcli.preprocess.brain import check_atlas_choice

    check_atlas_choice(atlas)
    subjects = _subjects(input, {"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f}, subject, seg)
    from tumorcli.cli.subjects import take_shard

    subjects = take_shard(subjects, shard)
    _batch(subjects, output, jobs, overwrite, strict, quiet, as_json, atlas=atlas,
           skull_strip=skull_strip, n4=n4, crop=crop, crop_margin_mm=crop_margin,
           normalize=normalize.value, spacing_mm=spacing, seed=seed)


def _subjects(input: Path | None, files: dict, name: str | None, seg: Path | None) -> list:
    from tumorcli.cli.subjects import subjects_from_options
    from tumorcli.errors import BadInput
    from tumorcli.preprocess.inputs import SubjectInputs

    subjects = subjects_from_options(input, files, name)
    if seg is not None:
        if len(subjects) != 1:
            raise BadInput("--seg needs a single subject", "preprocess that subject alone")
        if not seg.exists():
            raise BadInput(f"{seg}: --seg file not found", "check the path")
        subjects = [SubjectInputs(subjects[0].name, subjects[0].images, seg, subjects[0].folder)]
    return subjects


def _batch(subjects: list, output: Path, jobs: int, overwrite: bool, strict: bool, quiet: bool,
           as_json: bool, **options) -> None:
    import os
    from functools import partial

    from tumorcli.cli.batch import LOGS, Batch
    from tumorcli.errors import BadInput, PartialBatch
    from tumorcli.preprocess.pipeline import PreprocessConfig, guarded
    from tumorcli.progress import task

    if output.exists() and not output.is_dir():
        raise BadInput(f"{output}: exists and is not a folder", "give an output folder")
    output.mkdir(parents=True, exist_ok=True)
    config = PreprocessConfig(**options)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    batch = Batch("preprocess", output / LOGS)
    rows = []
    with task("Preprocessing", total=len(subjects)) as advance:
        work = partial(guarded, out=output, config=config, overwrite=overwrite, threads=threads,
                       strict=strict)
        for item, summary, error in batch.each(subjects, work, jobs=jobs, advance=advance,
                                               outputs=lambda s: [output / s.name]):
            rows.append(summary if error is None else {
                "subject": item.name, "status": "failed", "seconds": None,
                "error": error.message})
    failures = batch.errors
    if failures and len(failures) == len(subjects) == 1:
        raise failures[0]
    counts = batch.summary()
    result = {"output": str(output), "subjects": rows, "done": counts["done"],
              "skipped": counts["skipped"], "failed": counts["failed"],
              "warned": sum(bool(r.get("warnings")) for r in rows), "summary": counts}
    finish(result, as_json=as_json, quiet=quiet, human=lambda result: (_show(result),
                                                                       batch.show()))
    batch.raise_if_failed()
    warned = [r for r in rows if r.get("warnings")]
    if warned:
        raise PartialBatch(f"{len(warned)} of {len(subjects)} subjects finished with warnings, "
                           f"first: {warned[0]['subject']}: {warned[0]['warnings'][0]}",
                           "check those scans, or rerun with --strict to make this an error")


def _invert(mask: Path, record: Path | None, output: Path, onto: str, quiet: bool,
            as_json: bool) -> None:
    from tumorcli.errors import BadInput
    from tumorcli.preprocess.pipeline import invert

    if record is None:
        raise BadInput("--invert needs --record OUT/<subject>/preprocess.json",
                       "add --record with the subject's preprocess.json")
    for path, what in ((mask, "--invert"), (record, "--record")):
        if not path.exists():
            raise BadInput(f"{path}: {what} file not found", "check the path")
    result = invert(mask, record, output, onto)
    finish(result, as_json=as_json, quiet=quiet,
           human=lambda r: console().print(f"[green]wrote[/] {r['output']} (on the native "
                                           f"{r['onto']} grid of {r['native_file']})"))


def _show(result: dict) -> None:
    from rich.table import Table

    table = Table("subject", "status", "seconds", "note", title_justify="left",
                  title=f"Preprocessed into {result['output']}")
    for row in result["subjects"]:
        seconds = "" if row.get("seconds") is None else f"{row['seconds']:.1f}"
        if row.get("warnings"):
            table.add_row(row["subject"], f"{row['status']}, warning", seconds,
                          "; ".join(row["warnings"]), style="yellow")
        else:
            table.add_row(row["subject"], row["status"], seconds, row.get("error", ""),
                          style="red" if row["status"] == "failed" else None)
    console().print(table)
