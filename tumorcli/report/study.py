"""One patient's report, end to end: labels (given, or segmented here), facts, narrative
(template, or a checked language-model impression), figures, HTML."""

from __future__ import annotations

import base64
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tumorcli.errors import BadInput
from tumorcli.io.volume import Volume, load_volume, save_volume
from tumorcli.metrics.regions import REGIONS, parse_labels
from tumorcli.report import facts as facts_
from tumorcli.report import location
from tumorcli.report.inputs import BACKGROUND_ORDER, PatientInput, SessionInput
from tumorcli.report.narrative import Narrative, template_narrative

# (session) -> (labels Volume on the session's grid, uncertainty Volume or None)
Segment = Callable[[SessionInput], tuple[Volume, Volume | None]]


@dataclass(frozen=True)
class ReportOptions:
    """How to make a report. labels: mask values as `tumor volumes --labels`; llm_*: the
    optional language-model impression (no URL: no network use at all)."""

    labels: str = "1=NETC,2=SNFH,3=ET"
    labels_source: str = "given labels"
    llm_url: str | None = None
    llm_model: str | None = None
    llm_images: bool = False
    llm_timeout_s: float = 60.0


@dataclass
class Report:
    html: str
    facts: facts_.PatientFacts
    narrative: Narrative
    seconds: float
    overlays_png: list[bytes] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _background(session: SessionInput) -> tuple[Volume | None, str | None]:
    from tumorcli.preprocess.inputs import read_scan

    for modality in BACKGROUND_ORDER:
        if modality in session.images:
            return read_scan(session.images[modality], modality), modality
    return None, None


def _on_grid(path: Path, labels: Volume, option: str) -> Volume:
    volume = load_volume(path)
    if volume.shape[:3] != labels.shape[:3] or not np.allclose(volume.affine, labels.affine,
                                                               atol=1e-3):
        raise BadInput(f"{option} {path}: not on the labels' grid (shape {volume.shape} vs "
                       f"{labels.shape})", "give the map on the session's own grid (as tumor "
                       "segment and predict-post write them)")
    return volume


def build_report(patient: PatientInput, options: ReportOptions, segment: Segment | None = None,
                 post: dict[str, Path] | None = None, uncertainty: dict[str, Path] | None = None,
                 save_seg: Path | None = None) -> Report:
    """The report of `patient`: its sessions' labels are `session.labels` or, when None,
    made by `segment` (kept in `save_seg` when given). BadInput naming the file at fault."""
    from tumorcli.report import html, plots

    began = time.perf_counter()
    scheme = parse_labels(options.labels)
    post, uncertainty = post or {}, uncertainty or {}
    measured, views, warnings = [], [], []
    with tempfile.TemporaryDirectory(prefix="tumor-report-") as scratch:
        for session in patient.sessions:
            background, modality = _background(session)
            made_uncertainty = None
            labels_path = session.labels
            if labels_path is None:
                if segment is None:
                    raise BadInput(f"{session.case}: no labels", "give --seg, or let the "
                                   "report segment (without --seg)")
                labels_volume, made_uncertainty = segment(session)
                folder = save_seg if save_seg is not None else Path(scratch)
                folder.mkdir(parents=True, exist_ok=True)
                labels_path = save_volume(labels_volume, folder / f"{session.case}-seg.nii.gz")
            facts, labels = facts_.measure_session(session.case, session.session, session.day,
                                                   labels_path, scheme, background)
            if background is not None and background.shape[:3] != labels.shape[:3]:
                warnings.append(f"{session.case}: the {modality} scan is not on the labels' "
                                "grid; its overlays show the labels alone")
                background, modality = None, None
            maps = {"post": post.get(session.case), "uncertainty": uncertainty.get(session.case)}
            loaded = {kind: _on_grid(path, labels, f"--{kind}") for kind, path in maps.items()
                      if path is not None}
            if "uncertainty" not in loaded and made_uncertainty is not None:
                loaded["uncertainty"] = made_uncertainty
            measured.append(facts)
            views.append((session, labels, background, modality, labels_path, loaded))
    sessions = facts_.with_course(patient.name, measured)
    patient_facts = facts_.PatientFacts(patient.name, sessions, options.labels_source)
    narrative = template_narrative(patient_facts)
    overlays = []
    for (session, labels, background, modality, labels_path, loaded), facts in zip(views,
                                                                                   sessions):
        title = f"{session.case}" + (f" · day {session.day}" if session.day is not None else "")
        overlays.append(plots.overlay_figure(labels, background, title, loaded.get("post"),
                                             loaded.get("uncertainty")))
    if options.llm_url:
        narrative = _llm_narrative(narrative, patient_facts, options, overlays)
    warnings += narrative.warnings
    course = plots.course_figure([{"session": s.session, "day": s.day, "response": s.response,
                                   "volumes_cm3": s.volumes_cm3} for s in sessions]) \
        if len(sessions) > 1 else None
    rows = []
    for (session, labels, background, modality, labels_path, loaded), facts, png in zip(
            views, sessions, overlays):
        rows.append({**facts.as_dict(), "case": session.case,
                     "labels_name": Path(labels_path).name if session.labels else
                     f"segmented ({Path(labels_path).name})",
                     "background_name": modality,
                     "heading": f"{session.case}" + (f", day {session.day}"
                                                      if session.day is not None else ""),
                     "overlay_png": base64.b64encode(png).decode("ascii")})
    context = {"patient": patient.name, "sessions": rows, "regions": list(REGIONS),
               "days_known": all(s.day is not None for s in sessions),
               "labels_source": options.labels_source, "warnings": warnings,
               "rano_rule": facts_.RANO_RULE, "narrative": narrative,
               "template_impression": template_narrative(patient_facts).impression,
               "course_png": base64.b64encode(course).decode("ascii") if course else None,
               "legend": [(name, rgb) for name, rgb in plots.LABEL_COLOURS.values()],
               "methods": methods(options), "facts": patient_facts.as_dict()}
    return Report(html.render_report(context), patient_facts, narrative,
                  time.perf_counter() - began, overlays, warnings)


def _llm_narrative(template: Narrative, facts: facts_.PatientFacts, options: ReportOptions,
                   overlays: list[bytes]) -> Narrative:
    from tumorcli.report.llm import LlmFailure, ask_impression, check_text

    try:
        text = ask_impression(options.llm_url, options.llm_model, facts, options.llm_timeout_s,
                              overlays if options.llm_images else None)
    except LlmFailure as failure:
        template.warnings.append(f"the language model at {options.llm_url} gave no impression "
                                 f"({failure}); the template narrative is shown instead")
        return template
    segments, mismatches = check_text(text, facts)
    return Narrative(template.findings, text, "llm", segments, mismatches,
                     model=options.llm_model)


def methods(options: ReportOptions) -> list[str]:
    """The rules behind every fact, as the report's Methods section states them."""
    lines = [
        f"Labels: {options.labels_source} (mask values {options.labels}).",
        "Volumes: voxels × |det(affine)| / 1000 cm³ per region, by the function of tumor "
        "volumes.",
        "Hemisphere: side of the mid-sagittal plane holding the tumour core's centroid in "
        "RAS+ world coordinates from the affine (+x = the patient's right); the plane is "
        "SRI24's on the SRI24 grid, else the mean x of the scan's non-zero voxels.",
        "Lobe: the vendored SRI24 lobe map (FSL MNI152 lobe masks) at the tumour's voxels, only "
        "for labels on the SRI24 (BraTS) grid.",
        "Diameters: extent of the region's voxels along the patient's right–left, "
        "anterior–posterior and superior–inferior axes (cm).",
        f"Enhancement: none if ET < {facts_.ENHANCING_MIN_CM3} cm³; ring if NETC ≥ "
        f"{facts_.NECROSIS_MIN_CM3} cm³ and ≥ {facts_.RING_COVER:.0%} of the voxels bordering "
        "the NETC are ET; else solid. Necrosis fraction = NETC / TC.",
        "Oedema: SNFH volume (mild ≤ 20, moderate ≤ 60, extensive > 60 cm³) and its largest "
        "distance from the tumour core (mm).",
        f"Midline shift: {location.SHIFT_METHOD}.",
    ]
    if options.llm_url:
        from tumorcli.report.llm import chat_url

        lines.append(f"Impression by {options.llm_model} at {chat_url(options.llm_url)}; "
                     "checked: volumes within 5 % or 0.1 cm³, diameters within 5 % or 0.1 cm, "
                     "distances within 5 % or 1 mm, percentages within 5 % or 1 point, days "
                     "exactly, sides and lobes as measured; other units are mismatches.")
    return lines


def index_entry(report: Report, report_name: str) -> dict:
    """The cohort index's row for a report (also kept in its record for resumed batches)."""
    last = report.facts.sessions[-1]
    days = [s.day for s in report.facts.sessions if s.day is not None]
    return {"patient": report.facts.patient, "report": report_name,
            "sessions": len(report.facts.sessions),
            "days": f"{min(days)}–{max(days)}" if len(days) > 1 else (str(days[0]) if days
                                                                      else "—"),
            "et_cm3": last.volumes_cm3["ET"], "tc_cm3": last.volumes_cm3["TC"],
            "wt_cm3": last.volumes_cm3["WT"],
            "side": last.location.hemisphere if last.location else "—",
            "response": last.response}


def model_segment(model: str = "resunet", refine: str | None = None, steps: int = 10,
                  samples: int = 1, tta: bool = False, device: str = "auto", seed: int = 0
                  ) -> tuple[Segment, str]:
    """A Segment running the shipped (or named) model, refined when asked, as `tumor segment`
    does; and the words the report uses for it. The model loads on first use."""
    loaded: dict = {}

    def load():
        from tumorcli.infer.segment import Segmenter, find_model_folder
        from tumorcli.runtime import resolve_device, seed_everything

        seed_everything(seed)
        segmenter = Segmenter.load(find_model_folder(model), resolve_device(device))
        options = None
        if refine is not None:
            from tumorcli.infer.refine import RefineOptions, Refiner

            folder = find_model_folder(f"refine-{refine}")
            refiner = Refiner.load(folder, segmenter.device)
            refiner.check_prior(segmenter.config, folder)
            options = RefineOptions(refiner, steps, None, samples, seed, True, "ddim")
        loaded.update(segmenter=segmenter, options=options)

    def segment(session: SessionInput) -> tuple[Volume, Volume | None]:
        from tumorcli.infer.segment import segment_volumes
        from tumorcli.preprocess.inputs import find_subject, read_scan

        if session.folder is None:
            raise BadInput(f"{session.case}: no session folder to segment", "give --seg")
        if not loaded:
            load()
        segmenter = loaded["segmenter"]
        subject = find_subject(session.folder)  # BadInput naming missing modalities
        volumes = {m: read_scan(subject.images[m], m) for m in segmenter.config.modalities}
        result = segment_volumes(segmenter, volumes, tta, loaded["options"])
        return result.labels, result.uncertainty

    words = f"segmented by {model}" + (f" refined by {refine} ({samples} sample"
                                       f"{'s' if samples != 1 else ''}, {steps} steps)"
                                       if refine else "") + (" with TTA" if tta else "")
    return segment, words
