"""A report per patient of a cohort, and the index page, run as every batch verb runs
(tumorcli/cli/batch.py): one patient's failure is its own, a rerun skips reports made from the
same inputs and options (record: OUT/<patient>.html.json), nothing is half-written, and
OUT/logs/<patient>.log gets a line per outcome. The index lists every report in OUT with a
record, so the shards of a cluster array (--shard) each rebuild it with all finished ones."""

from __future__ import annotations

import json
from pathlib import Path

from tumorcli.report.inputs import PatientInput, attach_labels, attach_maps
from tumorcli.report.study import ReportOptions, Segment, build_report, index_entry

INDEX = "index.html"


def _made_from(patient: PatientInput, made_with: dict) -> dict:
    """The inputs' sha256 (labels, or the images segmented) and the options."""
    from tumorcli.preprocess.inputs import sha256_of

    inputs = {}
    for session in patient.sessions:
        files = {"labels": session.labels} if session.labels else dict(session.images)
        inputs[session.case] = {name: sha256_of(path) for name, path in sorted(files.items())}
        inputs[session.case]["day"] = session.day
    return {"inputs": inputs, **made_with}


def report_cohort(patients: list[PatientInput], seg: Path | None, options: ReportOptions,
                  segment: Segment | None, maps: dict[str, list[str]], save_seg: Path | None,
                  output: Path, pdf: Path | None, overwrite: bool, made_with: dict) -> dict:
    """Write OUT/<patient>.html (and PDF) for each patient, then OUT/index.html. Returns
    {"reports": rows, "index", "summary", "batch": the Batch (for its summary and exit 3)}."""
    from tumorcli.cli.batch import LOGS, Batch, finished, publish, record_path, staged_name
    from tumorcli.errors import BadInput
    from tumorcli.progress import task
    from tumorcli.report.html import write_pdf

    output.mkdir(parents=True, exist_ok=True)
    if pdf is not None:
        pdf.mkdir(parents=True, exist_ok=True)

    def report_of(patient: PatientInput) -> dict:
        final = output / f"{patient.name}.html"
        record = record_path(final)
        attach_labels(patient, seg, single=False)
        post = _own_maps(patient, maps["post"], "--post")
        uncertainty = _own_maps(patient, maps["uncertainty"], "--uncertainty")
        made_from = _made_from(patient, {**made_with, "post": sorted(map(str, post.values())),
                                         "uncertainty": sorted(map(str, uncertainty.values()))})
        pdf_final = None if pdf is None else pdf / f"{patient.name}.pdf"
        if not overwrite and finished(record, made_from) and (pdf_final is None
                                                              or pdf_final.is_file()):
            return {"patient": patient.name, "status": "skipped", "output": str(final)}
        if final.exists() and not overwrite:
            raise BadInput(f"{final}: exists and was made from other inputs or options",
                           "remove it, or pass --overwrite to replace it")
        made = build_report(patient, options, segment, post, uncertainty, save_seg)
        staged = staged_name(final)
        try:
            staged.write_text(made.html, encoding="utf-8")
            publish({final: staged}, record, made_from, "report",
                    seconds=round(made.seconds, 2), index=index_entry(made, final.name))
        finally:
            staged.unlink(missing_ok=True)
        if pdf_final is not None:
            write_pdf(final, pdf_final)
        return {"patient": patient.name, "status": "done", "sessions": len(made.facts.sessions),
                "output": str(final), "pdf": str(pdf_final) if pdf_final else None,
                "seconds": round(made.seconds, 2), "narrative": made.narrative.source,
                "mismatches": made.narrative.mismatches, "warnings": made.warnings,
                "volumes_cm3": made.facts.sessions[-1].volumes_cm3,
                "response": made.facts.sessions[-1].response}

    batch = Batch("report", output / LOGS, what="patients")
    rows = []
    with task("Reporting", total=len(patients)) as advance:
        for patient, row, error in batch.each(
                patients, report_of, advance=advance,
                outputs=lambda p: [output / f"{p.name}.html"]):
            if error is not None:
                continue
            rows.append(row)
    if batch.errors and len(patients) == 1:
        raise batch.errors[0]
    index = write_index(output)
    return {"reports": rows, "index": str(index), "summary": batch.summary(), "batch": batch}


def _own_maps(patient: PatientInput, given: list[str], option: str) -> dict[str, Path]:
    """The --post/--uncertainty values that belong to this patient's sessions."""
    cases = {s.case for s in patient.sessions}
    mine = [text for text in given
            if (text.partition("=")[0] if "=" in text else "") in cases
            or any(Path(text.rpartition("=")[2]).name.startswith(c) for c in cases)]
    return attach_maps(patient, mine, option)


def write_index(output: Path) -> Path:
    """OUT/index.html from the records of every report in OUT."""
    from tumorcli.report.html import render_index, write_text

    entries = []
    for record in sorted(output.glob("*.html.json")):
        try:
            entry = json.loads(record.read_text()).get("index")
        except (OSError, ValueError):
            continue
        if entry and (output / entry["report"]).is_file():
            entries.append(entry)
    return write_text(render_index(entries), output / INDEX)
