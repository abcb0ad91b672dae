"""`tumor report`: a self-contained HTML study report (and PDF) for a patient or a cohort."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Device, Json, Quiet, Seed, console, finish, start
from tumorcli.cli.sharding import shard_option

OptionalPath = Annotated[Optional[Path], typer.Option(show_default=False)]
PatientShard = shard_option("the cohort's patients sorted by name")


class RefineKind(str, Enum):
    medsegdiff = "medsegdiff"
    ddpm = "ddpm"


def report(
    input: Annotated[Path, typer.Option(
        "-i", "--input", help="A session folder, a patient's session folders (BraTS "
        "<patient>-<session>: a longitudinal report), FOLDER/PATIENT for the sessions "
        "FOLDER/PATIENT-NNN, or a cohort (a report per patient).", show_default=False)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="report.html for one patient; a folder for a cohort "
        "(<patient>.html each and index.html).", show_default=False)],
    seg: Annotated[Optional[Path], typer.Option(
        "--seg", help="Given labels: a mask for one session, or a folder of "
        "<case>-seg.nii.gz / <case>.nii.gz (found below it). Without it the report segments "
        "with the shipped model.", show_default=False)] = None,
    pdf: Annotated[Optional[Path], typer.Option(
        "--pdf", help="Also print the report to this PDF (a folder for a cohort) with headless "
        "Chromium.", show_default=False)] = None,
    days: Annotated[Optional[Path], typer.Option(
        "--days", help="CSV with columns subject,session,day (default: cohort.csv beside the "
        "session folders or one level up).", show_default=False)] = None,
    labels: Annotated[str, typer.Option(
        "--labels", help="Mask value of each class, as for tumor volumes (4=ET for BraTS "
        "2021).")] = "1=NETC,2=SNFH,3=ET",
    post: Annotated[Optional[list[str]], typer.Option(
        "--post", help="[CASE=]IMAGE: a predicted post-treatment or growth image shown beside "
        "that session's overlays (repeatable; CASE defaults to the session the file name "
        "starts with).", show_default=False)] = None,
    uncertainty: Annotated[Optional[list[str]], typer.Option(
        "--uncertainty", help="[CASE=]MAP: an uncertainty map shown beside that session's "
        "overlays (repeatable).", show_default=False)] = None,
    model: Annotated[str, typer.Option(
        "--model", help="Segmentation model when there is no --seg (see tumor segment).")
        ] = "resunet",
    refine: Annotated[Optional[RefineKind], typer.Option(
        "--refine", help="Refine the segmentation by diffusion (its entropy map is shown "
        "with --samples > 1).", show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", help="Refinements that vote.")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Refinement sampler steps.")] = 10,
    tta: Annotated[bool, typer.Option("--tta", help="Segment with the 8 axis flips.")] = False,
    save_seg: Annotated[Optional[Path], typer.Option(
        "--save-seg", help="Keep the labels the report made in this folder "
        "(<case>-seg.nii.gz).", show_default=False)] = None,
    llm_url: Annotated[Optional[str], typer.Option(
        "--llm-url", help="OpenAI-compatible endpoint for an AI-written impression: POST "
        "URL/chat/completions (or URL itself when it ends so); key from $TUMOR_LLM_API_KEY. "
        "Without it nothing goes over the network.", show_default=False)] = None,
    llm_model: Annotated[Optional[str], typer.Option(
        "--llm-model", help="Model name sent to --llm-url.", show_default=False)] = None,
    llm_images: Annotated[bool, typer.Option(
        "--llm-images", help="Also send the overlay images to --llm-url.")] = False,
    llm_timeout: Annotated[float, typer.Option(
        "--llm-timeout", help="Seconds to wait for --llm-url.")] = 60.0,
    shard: PatientShard = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="In a cohort, redo reports made from the same inputs and "
        "options (they are skipped otherwise).")] = False,
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Study report: volumes, response, overlays, a narrative from the measurements.

    One HTML file that opens offline (images inline): patient, sessions
    and days; NETC, SNFH, ET, TC, WT in cm³ (the numbers of tumor volumes)
    with change vs baseline and the RANO-style response of tumor volumes
    --subject; volumes over days; three planes through the tumour for every
    session with a colour legend; findings (hemisphere, lobe on the SRI24
    grid, diameters, enhancement, necrosis, oedema, a model estimate of the
    midline shift) and an impression. With --llm-url the impression is a
    language model's: every number, unit, side and lobe in it is checked
    against the measurements and mismatches are marked. A failing endpoint
    gives the template narrative and a warning.

    A cohort gives OUT/<patient>.html and OUT/index.html; a patient whose
    report was made from the same inputs and options is skipped, a failing
    one does not stop the others (exit code 3).

    Examples:
      tumor report -i sample_data/atlas/BraTS-GLI-00002 --seg sample_data/atlas -o r.html
      tumor report -i BraTS-GLI-00001-000 -o report.html --pdf report.pdf
      tumor report -i cohort -o reports --shard auto
      tumor report -i S --seg S -o r.html --llm-url http://127.0.0.1:8000/v1 --llm-model m
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput
    from tumorcli.report.inputs import find_patients

    _check_options(seg, refine, samples, steps, tta, save_seg, llm_url, llm_model, llm_images,
                   llm_timeout, pdf, model)
    patients, _ = find_patients(input, days)
    single = output.name.lower().endswith(".html")
    if single and len(patients) > 1:
        raise BadInput(f"{input}: holds {len(patients)} patients but -o {output} is one file",
                       "give an output folder for a cohort")
    if not single and output.exists() and not output.is_dir():
        raise BadInput(f"{output}: exists and is not a folder", "give report.html or a folder")
    if single and pdf is not None and not pdf.name.lower().endswith(".pdf"):
        raise BadInput(f"--pdf {pdf}: not a .pdf name", "e.g. --pdf report.pdf")
    for path in (output, pdf) if single else ():
        if path is not None and not path.parent.is_dir():
            raise BadInput(f"{path}: the folder {path.parent} does not exist",
                           "create it first or choose another output path")
    from tumorcli.report.study import ReportOptions, model_segment

    segment, words = (None, "given labels") if seg is not None else model_segment(
        model, refine.value if refine else None, steps, samples, tta, device, seed)
    options = ReportOptions(labels, words if seg is None else f"given ({seg})", llm_url,
                            llm_model, llm_images, llm_timeout)
    maps = {"post": post or [], "uncertainty": uncertainty or []}
    if single:
        return _one(patients[0], seg, options, segment, maps, save_seg, output, pdf, quiet,
                    as_json)
    from tumorcli.cli.sharding import take_shard
    from tumorcli.report.batch import report_cohort

    result = report_cohort(take_shard(patients, shard), seg, options, segment, maps, save_seg,
                           output, pdf, overwrite, made_with={
                               "labels": labels, "seg": seg is not None, "model": model,
                               "refine": refine.value if refine else None, "samples": samples,
                               "steps": steps, "tta": tta, "seed": seed, "llm_url": llm_url,
                               "llm_model": llm_model, "llm_images": llm_images})
    batch = result.pop("batch")
    finish(result, as_json=as_json, quiet=quiet,
           human=lambda result: (_show(result["reports"]), batch.show(),
                                 console().print(f"[green]wrote[/] {result['index']}")))
    batch.raise_if_failed()


def _check_options(seg, refine, samples, steps, tta, save_seg, llm_url, llm_model, llm_images,
                   llm_timeout, pdf, model) -> None:
    from tumorcli.errors import BadInput

    if seg is not None and (refine is not None or tta or save_seg is not None
                            or model != "resunet"):
        raise BadInput("--model, --refine, --tta and --save-seg choose how the report "
                       "segments; with --seg the labels are given", "leave out one or the other")
    if samples < 1 or steps < 1:
        raise BadInput(f"--samples {samples} / --steps {steps}: must be at least 1",
                       "e.g. --refine medsegdiff --samples 5")
    if (llm_url is None) != (llm_model is None):
        raise BadInput("--llm-url and --llm-model go together",
                       "e.g. --llm-url http://127.0.0.1:8000/v1 --llm-model NAME")
    if llm_images and llm_url is None:
        raise BadInput("--llm-images needs --llm-url", "or leave out --llm-images")
    if llm_url is not None and not llm_url.lower().startswith(("http://", "https://")):
        raise BadInput(f"--llm-url {llm_url}: not an http(s) URL",
                       "e.g. --llm-url http://127.0.0.1:8000/v1")
    if llm_timeout <= 0:
        raise BadInput(f"--llm-timeout {llm_timeout}: must be positive", "e.g. --llm-timeout 60")
    if pdf is not None:
        from tumorcli.errors import TumorError
        from tumorcli.report.html import CHROMIUM_INSTALL, find_chromium

        if find_chromium() is None:
            raise TumorError("--pdf needs Chromium, which is not installed", CHROMIUM_INSTALL)


def _one(patient, seg, options, segment, maps, save_seg, output: Path, pdf: Path | None,
         quiet: bool, as_json: bool) -> None:
    from tumorcli.report.html import write_pdf, write_text
    from tumorcli.report.inputs import attach_labels, attach_maps
    from tumorcli.report.study import build_report

    attach_labels(patient, seg, single=True)
    post = attach_maps(patient, maps["post"], "--post")
    uncertainty = attach_maps(patient, maps["uncertainty"], "--uncertainty")
    made = build_report(patient, options, segment, post, uncertainty, save_seg)
    write_text(made.html, output)
    if pdf is not None:
        write_pdf(output, pdf)
    row = _row(made, output, pdf)
    finish({"reports": [row]}, as_json=as_json, quiet=quiet,
           human=lambda result: _show(result["reports"]))


def _row(made, output: Path, pdf: Path | None) -> dict:
    return {"patient": made.facts.patient, "sessions": len(made.facts.sessions),
            "output": str(output), "pdf": str(pdf) if pdf else None,
            "seconds": round(made.seconds, 2), "narrative": made.narrative.source,
            "mismatches": made.narrative.mismatches, "warnings": made.warnings,
            "volumes_cm3": made.facts.sessions[-1].volumes_cm3,
            "response": made.facts.sessions[-1].response}


def _show(rows: list[dict]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table("patient", "sessions", "ET cm³", "WT cm³", "response", "seconds", "report",
                  title="Reports", title_justify="left")
    for row in rows:
        if row.get("status") == "skipped":
            table.add_row(row["patient"], "", "", "", "", "", f"skipped: {row['output']}")
            continue
        volumes = row["volumes_cm3"]
        table.add_row(row["patient"], str(row["sessions"]), f"{volumes['ET']:.2f}",
                      f"{volumes['WT']:.2f}", row["response"], f"{row['seconds']:.1f}",
                      row["output"])
    out = console()
    out.print(table)
    for row in rows:
        for warning in row.get("warnings", []):
            out.print(f"[yellow]warning[/] {escape(row['patient'])}: {escape(warning)}")
        if row.get("mismatches"):
            out.print(f"[yellow]{escape(row['patient'])}: {len(row['mismatches'])} statements "
                      "of the AI impression disagree with the measurements (marked in the "
                      "report)[/]")
