"""`tumor synth-cohort`: make a synthetic glioma cohort (BraTS 2023 layout) with ground truth."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import (Jobs, Json, OutputPath, Quiet, Seed, check_jobs, console,
                                 finish, start)


class Space(str, Enum):
    atlas = "atlas"
    native = "native"


class Size(str, Enum):
    full = "full"
    small = "small"


def synth_cohort(
    output: OutputPath,
    subjects: Annotated[int, typer.Option("--subjects", help="Number of patients.")] = 2,
    sessions: Annotated[int, typer.Option(
        "--sessions", help="Imaging sessions per patient: pre-operative + follow-ups (fewer if "
        "the patient dies first).")] = 3,
    space: Annotated[Space, typer.Option(
        "--space", help="atlas: co-registered on the SRI24 grid, as BraTS; native: each "
        "modality on its own scanner grid, with the true transforms in a json.")] = Space.atlas,
    size: Annotated[Size, typer.Option(
        "--size", help="full: 1 mm, 240×240×155; small: 2 mm, 96×112×80 (tests, CPU "
        "training).")] = Size.full,
    skull: Annotated[Optional[bool], typer.Option(
        "--skull/--no-skull", help="Keep the head around the brain (default: stripped in "
        "atlas space, head kept in native space).")] = None,
    dicom: Annotated[bool, typer.Option(
        "--dicom", help="Write native-space images as DICOM series instead of NIfTI.")] = False,
    untreated: Annotated[bool, typer.Option(
        "--untreated", help="Natural history: no surgery, radiotherapy or temozolomide.")] = False,
    untreated_fraction: Annotated[Optional[float], typer.Option(
        "--untreated-fraction", help="Leave each patient untreated (natural history) with this "
        "probability, 0 to 1 (default 0: all treated).")] = None,
    jobs: Jobs = 1,
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Make a synthetic glioma cohort: MR images, labels, reports, survival.

    Examples:
      tumor synth-cohort -o cohort --subjects 10 --jobs 2
      tumor synth-cohort -o tiny --size small --subjects 1 --sessions 2
      tumor synth-cohort -o scanner --space native --dicom --subjects 1
      tumor synth-cohort -o mixed --subjects 20 --untreated-fraction 0.3
    """
    start(quiet, as_json)
    import time

    from tumorcli.errors import BadInput

    if subjects < 1 or subjects > 99999:
        raise BadInput(f"--subjects {subjects}: must be between 1 and 99999", "e.g. --subjects 10")
    if sessions < 1 or sessions > 20:
        raise BadInput(f"--sessions {sessions}: must be between 1 and 20",
                       "1 is the pre-operative scan only; 3 adds two follow-ups")
    check_jobs(jobs)
    if dicom and space is not Space.native:
        raise BadInput("--dicom writes scanner-space series and needs --space native",
                       "add --space native, or drop --dicom")
    if untreated and untreated_fraction is not None:
        raise BadInput("--untreated and --untreated-fraction: give one of them",
                       "--untreated is the same as --untreated-fraction 1")
    if untreated_fraction is not None and not 0.0 <= untreated_fraction <= 1.0:
        raise BadInput(f"--untreated-fraction {untreated_fraction}: must be between 0 and 1",
                       "a probability per patient, e.g. --untreated-fraction 0.3")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise BadInput(f"{output}: already exists and is not an empty folder",
                       "choose a new output folder; the cohort is written as a whole")

    from tumorcli.progress import task
    from tumorcli.synth.cohort import CohortConfig, is_treated, make_cohort

    config = CohortConfig(subjects=subjects, sessions=sessions, seed=seed, space=space.value,
                          size=size.value,
                          skull=(space is Space.native) if skull is None else skull,
                          dicom=dicom, treated=not untreated,
                          untreated_fraction=untreated_fraction or 0.0)
    began = time.perf_counter()
    with task("Simulating subjects", total=subjects) as advance:
        rows = make_cohort(config, output, jobs=min(jobs, subjects), advance=advance)
    seconds = time.perf_counter() - began
    result = {"output": str(output), "subjects": subjects, "sessions_written": len(rows),
              "space": space.value, "size": size.value, "skull": config.skull, "dicom": dicom,
              "seed": seed, "seconds": round(seconds, 1),
              "short_survival": sum(1 for r in rows if r["session"] == "000"
                                    and r["survival_class"] == "short"),
              "untreated": sum(not is_treated(config, index) for index in range(subjects)),
              "csv": str(output / "cohort.csv")}
    finish(result, as_json=as_json, quiet=quiet, human=_show)


def _show(result: dict) -> None:
    console().print(
        f"wrote {result['sessions_written']} sessions of {result['subjects']} subjects "
        f"({result['space']} space, {result['size']}) to {result['output']} in "
        f"{result['seconds']} s; {result['short_survival']} short survivors, "
        f"{result['untreated']} untreated; see {result['csv']}")
