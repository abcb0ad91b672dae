"""An optional language-model impression, checked word by word against the measurements.

Request: POST an OpenAI-style chat completion to `{url}/chat/completions` (or to `url` itself
when it already ends in /chat/completions), JSON {"model", "messages", "temperature": 0}, with
`Authorization: Bearer $TUMOR_LLM_API_KEY` when that variable is set; images (the overlays as
PNG data URLs) only when asked. Standard library only (urllib); nothing is sent without a URL.
Any failure (timeout, refused connection, HTTP error, a body that is not the expected JSON) is
an LlmFailure: the caller falls back to the template narrative and warns.

Check: every number with a unit, every unit and every laterality or lobe word in the text must
match a measurement of this patient (any session): volumes (cm³, cc, mL) within 5 % or
0.1 cm³, diameters (cm, or mm ×10) within 5 % or 0.1 cm, other distances (mm) within 5 % or
1 mm, percentages (sign ignored: "a decrease of 83 %") within 5 % or 1 point, days exactly;
a unit the measurements never use (mm³, cm², weeks, …) is a mismatch; a number without unit
must equal some measured value or be a small count (≤ 10) or a session number; "left"/"right"
must be the hemisphere holding the tumour (core) in some session ("shift … towards the
right": the midline shift's direction), "bilateral" needs a tumour crossing the midline; lobe
words must be the lobes measured. A value is matched against every measurement of the patient:
which region or session the text attributes it to is not checked.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field

from tumorcli.report.facts import PatientFacts

API_KEY_VARIABLE = "TUMOR_LLM_API_KEY"
SYSTEM_PROMPT = ("You are a neuroradiologist writing the Impression section of a brain tumour "
                 "MRI report. Use only the measured facts given, copy numbers with their units "
                 "exactly as given, and never invent measurements. 3 to 5 sentences.")


class LlmFailure(Exception):
    """The endpoint gave no usable answer; the message says why."""


def chat_url(url: str) -> str:
    """Where the request goes: `url` if it ends in /chat/completions, else that path added."""
    trimmed = url.rstrip("/")
    return trimmed if trimmed.endswith("/chat/completions") else trimmed + "/chat/completions"


def prompt_facts(facts: PatientFacts) -> dict:
    """The facts the model sees, rounded as the report prints them."""
    sessions = []
    for s in facts.sessions:
        entry = {"session": f"{s.session:03d}", "day": s.day, "response": s.response,
                 "volumes_cm3": {r: round(v, 2) for r, v in s.volumes_cm3.items()},
                 "change_vs_baseline_pct": {r: None if v is None else round(v)
                                            for r, v in s.change_pct.items()}}
        if s.has_tumour:
            where = s.location
            entry.update({
                "hemisphere": where.hemisphere, "crosses_midline": where.crosses_midline,
                "lobe": where.lobe, "enhancement": s.enhancement,
                "max_diameters_cm_rl_ap_si": {r: [round(d, 1) for d in ds]
                                              for r, ds in s.diameters_cm.items()},
                "necrosis_pct_of_core": None if s.necrosis_pct is None else round(s.necrosis_pct),
                "oedema": s.oedema_degree,
                "oedema_reach_mm": None if s.oedema_reach_mm is None else round(s.oedema_reach_mm),
                "midline_shift_mm_model_estimate": round(where.midline_shift_mm, 1),
                "midline_shift_towards": where.shift_toward})
        sessions.append(entry)
    return {"patient": facts.patient, "sessions": sessions, "response_rule": facts.rano_rule}


def ask_impression(url: str, model: str, facts: PatientFacts, timeout_s: float,
                   images_png: list[bytes] | None = None) -> str:
    """The model's impression text; LlmFailure for any failure."""
    import socket
    import urllib.error
    import urllib.request

    text = ("Measured facts (JSON):\n" + json.dumps(prompt_facts(facts), ensure_ascii=False)
            + "\n\nWrite the Impression.")
    content: object = text
    if images_png:
        content = [{"type": "text", "text": text}] + [
            {"type": "image_url", "image_url": {
                "url": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}}
            for png in images_png]
    body = json.dumps({"model": model, "temperature": 0, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]})
    headers = {"Content-Type": "application/json"}
    if os.environ.get(API_KEY_VARIABLE):
        headers["Authorization"] = f"Bearer {os.environ[API_KEY_VARIABLE]}"
    request = urllib.request.Request(chat_url(url), data=body.encode(), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        raise LlmFailure(f"HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise LlmFailure(f"no answer ({reason or type(error).__name__})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise LlmFailure(f"the answer is not JSON ({type(error).__name__})") from None
    try:
        message = answer["choices"][0]["message"]["content"]
        if isinstance(message, list):  # content given as parts
            message = " ".join(part.get("text", "") for part in message)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LlmFailure("the answer has no choices[0].message.content") from None
    if not isinstance(message, str) or not message.strip():
        raise LlmFailure("the answer's message is empty")
    return message.strip()


@dataclass
class Measured:
    """Values the text may state, per unit, and the words it may use."""

    cm3: list[float] = field(default_factory=list)
    cm: list[float] = field(default_factory=list)
    mm: list[float] = field(default_factory=list)
    pct: list[float] = field(default_factory=list)
    days: list[int] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)
    sides: set[str] = field(default_factory=set)
    shift_sides: set[str] = field(default_factory=set)
    bilateral: bool = False
    lobes: set[str] = field(default_factory=set)
    lobes_known: bool = False


def measured_values(facts: PatientFacts) -> Measured:
    found = Measured()
    for s in facts.sessions:
        found.cm3 += list(s.volumes_cm3.values())
        found.pct += [abs(v) for v in s.change_pct.values() if v is not None]
        found.sessions.append(s.session)
        if s.day is not None:
            found.days.append(s.day)
        if not s.has_tumour:
            continue
        where = s.location
        found.cm += [d for ds in s.diameters_cm.values() for d in ds]
        found.mm += [where.midline_shift_mm] + ([s.oedema_reach_mm] if s.oedema_reach_mm else [])
        found.pct += [v for v in (s.necrosis_pct, where.other_side_pct) if v is not None]
        if s.ring_cover is not None:
            found.pct.append(100 * s.ring_cover)
        found.sides.add(where.hemisphere)
        found.bilateral |= where.crosses_midline
        if where.shift_toward:
            found.shift_sides.add(where.shift_toward)
        if where.lobe_note and not where.lobe_note.startswith("no lobe"):
            found.lobes_known = True
            found.lobes |= set(where.lobes)
    return found


def _close(value: float, candidates: list[float], relative: float, absolute: float) -> bool:
    return any(abs(value - c) <= max(relative * abs(c), absolute) for c in candidates)


_NUMBER = r"(\d+(?:\.\d+)?)"
_UNIT = (r"(cm³|cm3|cm\^3|cc|mL|ml|cubic centimet(?:re|er)s?|mm³|mm3|cm²|cm2|mm²|mm2|cm|mm|"
         r"%|percent|days?|weeks?|months?|years?)(?![\w³²])")
_TRIPLE = re.compile(rf"{_NUMBER}\s*(?:x|×|by)\s*{_NUMBER}(?:\s*(?:x|×|by)\s*{_NUMBER})?\s*"
                     r"(cm|mm)\b", re.IGNORECASE)
_WITH_UNIT = re.compile(rf"(?<![\w.]){_NUMBER}\s*{_UNIT}", re.IGNORECASE)
_DAY = re.compile(rf"\bday\s+{_NUMBER}", re.IGNORECASE)
_BARE = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w.])")
_AXIS = re.compile(r"\b(?:right|left)\s*[–-]\s*(?:left|right)\b", re.IGNORECASE)
_SIDE = re.compile(r"\b(left|right|bilateral(?:ly)?)\b", re.IGNORECASE)
_LOBE = re.compile(r"\b(front|pariet|tempor|occipit|insul|thalam)(?:al|o|ar|a|ic|us)?\b",
                   re.IGNORECASE)
_LOBE_NAMES = {"front": "frontal", "pariet": "parietal", "tempor": "temporal",
               "occipit": "occipital", "insul": "insular", "thalam": "thalamic"}


def check_text(text: str, facts: PatientFacts) -> tuple[list[tuple[str, str | None]],
                                                        list[str]]:
    """(segments, mismatches): the text cut into pieces, each with the reason it disagrees with
    the measurements (None when it agrees or states nothing checkable), and the list of the
    disagreeing pieces as "'piece': reason"."""
    known = measured_values(facts)
    problems: list[tuple[int, int, str | None]] = []  # (start, end, problem or None = checked)
    taken = [False] * len(text)

    def claim(match, problem):
        if any(taken[match.start():match.end()]):
            return
        taken[match.start():match.end()] = [True] * (match.end() - match.start())
        problems.append((match.start(), match.end(), problem))

    names = [facts.patient] + [f"{facts.patient}-{s.session:03d}" for s in facts.sessions]
    for name in sorted(names, key=len, reverse=True):  # ids are not measurements
        for match in re.finditer(re.escape(name), text):
            claim(match, None)
    for match in _AXIS.finditer(text):  # "right–left" names an axis, not a side
        claim(match, None)
    for match in _TRIPLE.finditer(text):
        values = [float(v) for v in match.groups()[:3] if v is not None]
        in_cm = [v if match[4].lower() == "cm" else v / 10 for v in values]
        wrong = [v for v, c in zip(values, in_cm) if not _close(c, known.cm, 0.05, 0.1)]
        claim(match, None if not wrong else f"{', '.join(map(str, wrong))} {match[4]}: no "
              "measured diameter within 5 % or 0.1 cm")
    for match in _DAY.finditer(text):
        day = float(match[1])
        claim(match, None if day in known.days else f"day {match[1]}: no session on that day "
              f"(days {', '.join(map(str, known.days)) or 'unknown'})")
    for match in _WITH_UNIT.finditer(text):
        claim(match, _unit_problem(float(match[1]), match[2], known))
    for match in _BARE.finditer(text):
        value = float(match[1])
        fine = ((value.is_integer() and value <= 10) or value in known.sessions
                or value in known.days
                or any(_close(value, values, 0.05, 0.1) for values in
                       (known.cm3, known.cm, known.mm, known.pct)))
        claim(match, None if fine else f"{match[1]}: a number without unit that matches no "
              "measurement")
    for match in _SIDE.finditer(text):
        claim(match, _side_problem(match, text, known))
    for match in _LOBE.finditer(text):
        lobe = _LOBE_NAMES[match[1].lower()]
        if not known.lobes_known:
            claim(match, f"{match[0]}: no lobe was measured (labels not in SRI24 space)")
        else:
            claim(match, None if lobe in known.lobes else
                  f"{match[0]}: the tumour lies in {', '.join(sorted(known.lobes)) or 'no lobe'}")
    segments, mismatches, position = [], [], 0
    for start, end, problem in sorted(problems):
        if problem is None:
            continue
        piece = text[start:end]
        reason = problem.split(": ", 1)[1] if ": " in problem else problem
        segments.append((text[position:start], None))
        segments.append((piece, reason))
        mismatches.append(f"'{piece}': {reason}")
        position = end
    segments.append((text[position:], None))
    return [s for s in segments if s[0]], mismatches


def _unit_problem(value: float, unit: str, known: Measured) -> str | None:
    unit_lower = unit.lower()
    if unit_lower in ("cm³", "cm3", "cm^3", "cc", "ml") or unit_lower.startswith("cubic"):
        return None if _close(value, known.cm3, 0.05, 0.1) else \
            f"{value:g} {unit}: no measured volume within 5 % or 0.1 cm³"
    if unit_lower == "cm":
        return None if _close(value, known.cm, 0.05, 0.1) or _close(10 * value, known.mm, 0.05,
                                                                      1.0) else \
            f"{value:g} cm: no measured diameter or distance within 5 % or 0.1 cm"
    if unit_lower == "mm":
        return None if _close(value, known.mm, 0.05, 1.0) or _close(value / 10, known.cm, 0.05,
                                                                     0.1) else \
            f"{value:g} mm: no measured distance within 5 % or 1 mm"
    if unit_lower in ("%", "percent"):
        return None if _close(value, known.pct, 0.05, 1.0) else \
            f"{value:g} %: no measured percentage within 5 % or 1 point"
    if unit_lower in ("day", "days"):
        gaps = {abs(a - b) for a in known.days for b in known.days}
        return None if value in known.days or value in gaps else \
            f"{value:g} days: neither a session's day nor the time between two"
    return f"{value:g} {unit}: a unit the measurements do not use"


def _side_problem(match, text: str, known: Measured) -> str | None:
    word = match[1].lower()
    if word.startswith("bilateral"):
        return None if known.bilateral else f"{match[0]}: the tumour does not cross the midline"
    before = text[max(0, match.start() - 40):match.start()].lower()
    if "shift" in before:
        if not known.shift_sides:
            return f"{match[0]}: no midline shift of 1 mm or more was estimated"
        return None if word in known.shift_sides else \
            f"{match[0]}: the estimated midline shift is towards the " \
            f"{', '.join(sorted(known.shift_sides))}"
    return None if word in known.sides else \
        f"{match[0]}: the tumour is in the {', '.join(sorted(known.sides)) or 'no'} hemisphere"
