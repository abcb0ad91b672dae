"""`tumor predict-growth`: a future session (t1n, t1c, t2f, whole-tumour mask, uncertainty)
from three earlier sessions, their days and treatments, at a target day under a chosen
treatment (treatment-aware diffusion, after TaDiff)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Device, Json, Quiet, Seed, console, finish, start

FILES = {"t1n": "predicted-t1n.nii.gz", "t1c": "predicted-t1c.nii.gz",
         "t2f": "predicted-t2f.nii.gz", "mask": "predicted-seg.nii.gz",
         "probability": "probability.nii.gz", "uncertainty": "uncertainty.nii.gz"}


def predict_growth(
    sessions: Annotated[list[Path], typer.Argument(
        help="Earlier session folders in time order (BraTS naming: t1n, t1c, t2f and a "
        "*-seg mask each, on one grid). Three; with one or two the earliest is repeated.",
        show_default=False)],
    target_day: Annotated[float, typer.Option("--target-day", help="Day to predict.",
                                              show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="New folder for the "
                                         "prediction.")],
    days: Annotated[Optional[str], typer.Option(
        "--days", help="Day of each session, comma-separated (e.g. 0,40,90). Default: the "
        "sessions' days (and treatments) in the cohort.csv beside them.", show_default=False
        )] = None,
    treatments: Annotated[Optional[str], typer.Option(
        "--treatments", help="What each session followed, comma-separated; surgery, rt, tmz "
        "joined by '+' or none (e.g. none,surgery+rt+tmz,tmz). Default: the cohort.csv's treatments column with --days omitted, else none for each.",
        show_default=False)] = None,
    target_treatment: Annotated[str, typer.Option(
        "--target-treatment", help="Treatment between the last session and the target day "
        "(e.g. tmz, rt+tmz, none).")] = "none",
    samples: Annotated[int, typer.Option("--samples", help="1: the model's conditional-mean "
                                         "estimate (one call); N ≥ 2: the mean of N samples "
                                         "and their sd (uncertainty.nii.gz).")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Sampler steps per sample (with "
                                       "--samples ≥ 2).")] = 10,
    model: Annotated[str, typer.Option("--model", help="Model name or folder.")] = "growth",
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Predict a later session of a patient from three earlier ones.

    Writes OUT/predicted-t1n|t1c|t2f.nii.gz (on the last session's grid and intensity scale),
    OUT/predicted-seg.nii.gz (whole tumour = 1), OUT/probability.nii.gz, with --samples ≥ 2
    OUT/uncertainty.nii.gz (sd over samples), and OUT/prediction.json (inputs, volume).

    Examples:
      tumor predict-growth S1 S2 S3 --days 0,120,210 --treatments none,surgery+rt+tmz,tmz \\
          --target-day 300 --target-treatment tmz -o growth-300
      tumor predict-growth S1 S2 S3 --days 0,120,210 --target-day 300 -o g --samples 4
      tumor predict-growth cohort/P-001 cohort/P-002 cohort/P-003 --target-day 400 -o g
          (days and treatments from cohort/cohort.csv)
    """
    start(quiet, as_json)
    import json
    import time

    from tumorcli.errors import BadInput
    from tumorcli.nets.growth import SOURCES, treatment_flags

    if days is None:
        days, table_treatments = _from_table(sessions)
        treatments = treatments or table_treatments
    day_values = _numbers(days, "--days")
    if len(day_values) != len(sessions):
        raise BadInput(f"--days {days}: {len(day_values)} days for {len(sessions)} sessions",
                       "give one day per session, e.g. --days 0,40,90")
    if any(b <= a for a, b in zip(day_values, day_values[1:])):
        raise BadInput(f"--days {days}: the sessions' days must increase",
                       "give the sessions in time order")
    words = treatments.split(",") if treatments else ["none"] * len(sessions)
    if len(words) != len(sessions):
        raise BadInput(f"--treatments {treatments}: {len(words)} entries for {len(sessions)} "
                       "sessions", "one per session, e.g. none,surgery+rt+tmz,tmz")
    for text, option in [*((w, "--treatments") for w in words),
                         (target_treatment, "--target-treatment")]:
        try:
            treatment_flags(text)
        except ValueError as error:
            raise BadInput(f"{option} {text}: {error}", "e.g. surgery+rt+tmz or none") from None
    if not 1 <= len(sessions) <= SOURCES:
        raise BadInput(f"{len(sessions)} sessions given: the model takes {SOURCES}",
                       "give the three latest sessions before the target day")
    if samples < 1 or not 1 <= steps <= 1000:
        raise BadInput(f"--samples {samples} --steps {steps}: need samples ≥ 1, steps 1–1000",
                       "e.g. --samples 4 --steps 10")
    for folder in sessions:
        if not folder.is_dir():
            raise BadInput(f"{folder}: not a session folder", "give BraTS session folders")
    if output.exists():
        raise BadInput(f"{output}: already exists", "choose a new output folder")
    repeated = SOURCES - len(sessions)
    if repeated:   # the documented fallback: the earliest session stands in for missing ones
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"warning: {len(sessions)} session(s) given; the earliest is repeated {repeated}× "
            f"to make {SOURCES} (less reliable)", style="yellow", markup=False)
    order = [0] * repeated + list(range(len(sessions)))

    from tumorcli.infer.growth_inputs import read_session
    from tumorcli.infer.predict_growth import GrowthPredictor
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.io.atomic import atomic_folder
    from tumorcli.io.volume import save_volume
    from tumorcli.progress import task
    from tumorcli.runtime import resolve_device, seed_everything

    read = []
    for folder in sessions:
        images, mask = read_session(folder)
        if mask is None:
            raise BadInput(f"{folder}: no *-seg mask", f"segment it first: tumor segment -i "
                           f"{folder} -o {folder}/{folder.name}-seg.nii.gz")
        read.append((images, mask))
    seed_everything(seed)
    predictor = GrowthPredictor.load(find_model_folder(model), resolve_device(device))
    began = time.perf_counter()
    with task("Predicting", total=samples * (steps if samples > 1 else 1)) as advance:
        result = predictor.predict([read[i][0] for i in order], [read[i][1] for i in order],
                                   [day_values[i] for i in order], [words[i] for i in order],
                                   target_day, target_treatment, samples=samples,
                                   steps=steps if samples > 1 else 1, seed=seed,
                                   advance=advance)
    seconds = time.perf_counter() - began
    record = {"output": str(output), "sessions": [str(s) for s in sessions], "days": day_values,
              "treatments": words, "target_day": target_day,
              "target_treatment": target_treatment, "samples": samples,
              "steps": steps if samples > 1 else 1, "seed": seed, "model": model,
              "repeated_earliest": repeated,
              "predicted_wt_cm3": round(result.volume_cm3, 2), "seconds": round(seconds, 2)}
    with atomic_folder(output) as folder:
        for modality, volume in result.images.items():
            save_volume(volume, folder / FILES[modality])
        save_volume(result.mask, folder / FILES["mask"])
        save_volume(result.probability, folder / FILES["probability"])
        if result.uncertainty is not None:
            save_volume(result.uncertainty, folder / FILES["uncertainty"])
        (folder / "prediction.json").write_text(json.dumps(record, indent=2) + "\n")
    finish(record, as_json=as_json, quiet=quiet, human=lambda r: console().print(
        f"[green]wrote[/] {r['output']}: whole tumour {r['predicted_wt_cm3']} cm³ at day "
        f"{r['target_day']:g} ({r['seconds']} s)"))


def _from_table(sessions: list[Path]) -> tuple[str, str]:
    """(days, treatments) of the sessions from the cohort.csv in their parent folder."""
    import csv

    from tumorcli.errors import BadInput

    table = sessions[0].parent / "cohort.csv"
    if not table.is_file():
        raise BadInput(f"no --days given and no {table}", "give --days, e.g. --days 0,40,90")
    with open(table, newline="") as stream:
        rows = {f"{r.get('subject')}-{r.get('session')}": r for r in csv.DictReader(stream)}
    missing = [s.name for s in sessions if s.name not in rows]
    if missing:
        raise BadInput(f"{table}: no row for {missing[0]}", "give --days, e.g. --days 0,40,90")
    days = ",".join(rows[s.name]["day"] for s in sessions)
    given = [rows[s.name].get("treatments") for s in sessions]
    return days, (",".join(given) if all(given) else "")


def _numbers(text: str, option: str) -> list[float]:
    from tumorcli.errors import BadInput

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"{option} {text}: expected numbers separated by commas",
                       f"e.g. {option} 0,40,90") from None
