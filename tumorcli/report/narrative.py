"""The template narrative: structured findings and an impression, every word from the facts.

Numbers are written as the tables show them: volumes in cm³ with 2 decimals, diameters in cm
with 1, changes in % with none, distances in mm (oedema reach with none, midline shift with 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tumorcli.report.facts import PatientFacts, SessionFacts

PATTERN_WORDS = {"ring": "ring-enhancing", "solid": "solidly enhancing",
                 "none": "non-enhancing"}


@dataclass
class Narrative:
    """What the report says in words. findings: per session, (item, text) pairs; impression:
    prose; source "template" or "llm"; segments: the impression as (text, problem or None)
    pieces, problems marking text that disagrees with the measurements."""

    findings: list[tuple[str, list[tuple[str, str]]]]
    impression: str
    source: str = "template"
    segments: list[tuple[str, str | None]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    model: str | None = None


def cm3(value: float) -> str:
    return f"{value:.2f} cm³"


def pct(value: float | None) -> str:
    return "n/a (no baseline volume)" if value is None else f"{value:+.0f} %"


def when(session: SessionFacts) -> str:
    day = f"day {session.day}, " if session.day is not None else ""
    return f"{day}session {session.session:03d}"


def session_items(session: SessionFacts) -> list[tuple[str, str]]:
    """(item, text) pairs of one session's findings."""
    if not session.has_tumour:
        return [("Tumour", "no labelled tumour (all regions 0.00 cm³)")]
    v, where = session.volumes_cm3, session.location
    place = f"{where.hemisphere} hemisphere"
    if where.lobe:
        place = f"{where.hemisphere} {where.lobe}"
    if where.crosses_midline:
        place += f", crossing the midline ({where.other_side_pct:.0f} % of the whole tumour " \
                 "on the other side)"
    items = [("Location", place + ("" if where.lobe else f" ({where.lobe_note})"))]
    sizes = [f"{name} {' × '.join(f'{d:.1f}' for d in session.diameters_cm[name])} cm"
             for name in ("TC", "WT") if name in session.diameters_cm]
    items.append(("Maximal diameters", "; ".join(sizes) + " (right–left × anterior–posterior "
                  "× superior–inferior)"))
    enhancement = {"ring": f"ring: enhancement surrounds necrosis (ET {cm3(v['ET'])}; "
                           f"{100 * (session.ring_cover or 0):.0f} % of the necrosis border is "
                           "enhancing)",
                   "solid": f"solid (ET {cm3(v['ET'])})",
                   "none": f"none (ET {cm3(v['ET'])})"}[session.enhancement]
    items.append(("Enhancement", enhancement))
    if session.necrosis_pct is not None and v["TC"] >= 0.5:
        items.append(("Necrosis", f"NETC {cm3(v['NETC'])}, {session.necrosis_pct:.0f} % of the "
                      f"tumour core ({cm3(v['TC'])})"))
    oedema = f"{session.oedema_degree}, SNFH {cm3(v['SNFH'])} (whole tumour {cm3(v['WT'])})"
    if session.oedema_reach_mm is not None:
        oedema += f", reaching {session.oedema_reach_mm:.0f} mm beyond the tumour core"
    items.append(("Oedema", oedema))
    shift = (f"{where.midline_shift_mm:.1f} mm towards the {where.shift_toward}"
             if where.shift_toward else "under 1 mm")
    items.append(("Midline shift", f"{shift} (model estimate, not measured on the image)"))
    if session.response != "baseline":
        changes = ", ".join(f"{region} {pct(session.change_pct[region])}"
                            for region in ("ET", "TC", "WT"))
        items.append(("Change vs baseline", f"{changes}; response: {session.response}"))
    return items


def template_narrative(facts: PatientFacts) -> Narrative:
    """Findings for every session and an impression of the latest against the first."""
    findings = [(when(s), session_items(s)) for s in facts.sessions]
    return Narrative(findings, template_impression(facts))


def template_impression(facts: PatientFacts) -> str:
    first, last = facts.sessions[0], facts.sessions[-1]
    if not last.has_tumour:
        text = f"No labelled tumour at {when(last)}."
    else:
        where = last.location
        place = f"the {where.hemisphere} {where.lobe}" if where.lobe else \
            f"the {where.hemisphere} hemisphere"
        lesion = PATTERN_WORDS[last.enhancement]
        text = (f"{lesion.capitalize()} tumour in {place} at {when(last)}: enhancing tumour "
                f"{cm3(last.volumes_cm3['ET'])}, tumour core {cm3(last.volumes_cm3['TC'])}, "
                f"whole tumour {cm3(last.volumes_cm3['WT'])}.")
        if where.shift_toward:
            text += (f" Estimated midline shift {where.midline_shift_mm:.1f} mm towards the "
                     f"{where.shift_toward}.")
    if last is first:
        return text + " No earlier session for comparison."
    return (text + f" Compared with {when(first)}: ET {pct(last.change_pct['ET'])}, "
            f"WT {pct(last.change_pct['WT'])}; RANO-style response: {last.response}.")
