"""Free-text radiology reports made from the ground truth, worded differently each time.

Everything stated is measured on the session's labels: hemisphere (side of the mid-sagittal
plane), lobe (template lobe masks warped with the subject), size (cm³ and the extent in cm),
enhancement pattern, oedema and midline shift. The wording is drawn from synonyms so that
text-conditioned models learn the facts, not one sentence.
"""

from __future__ import annotations

import numpy as np

from tumorcli.synth.anatomy import LOBE_NAMES, TEMPLATE_MIDLINE_X, Anatomy
from tumorcli.synth.growth import ET, NETC, label_volumes_cm3
from tumorcli.io.itk import Grid

_MASS = ("mass", "lesion", "tumour")
_OEDEMA = ("surrounding T2/FLAIR hyperintensity", "perilesional FLAIR signal abnormality",
           "surrounding oedema and non-enhancing infiltration")
_NO_SHIFT = ("No midline shift.", "Midline structures are central.", "There is no midline shift.")


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _location(mask: np.ndarray, anatomy: Anatomy, grid: Grid) -> tuple[str, str]:
    """(hemisphere, lobe phrase) of the voxels in `mask`."""
    index = np.argwhere(mask)
    x = grid.world(index.mean(axis=0))[0]
    side = "right" if x > TEMPLATE_MIDLINE_X else "left"  # RAS: +x is the patient's right
    lobes = anatomy.lobes[mask]
    lobes = lobes[lobes > 0]
    if lobes.size == 0:
        return side, "deep white matter"
    counts = np.bincount(lobes, minlength=10)
    order = np.argsort(counts)[::-1]
    first = LOBE_NAMES[int(order[0])]
    second = LOBE_NAMES.get(int(order[1])) if counts[order[1]] > 0.25 * counts[order[0]] else None
    lobar = {"frontal", "parietal", "temporal", "occipital"}
    if second and first in lobar and second in lobar:
        return side, f"{first[:-2] if first.endswith('al') else first}o-{second} lobes"
    if first in lobar:
        return side, f"{first} lobe"
    return side, f"{first} region"


def _extent_cm(mask: np.ndarray, grid: Grid) -> list[float]:
    index = np.argwhere(mask)
    span = (index.max(axis=0) - index.min(axis=0) + 1) * np.array(grid.spacing) / 10.0
    return sorted((float(s) for s in span), reverse=True)


def radiology_report(labels: np.ndarray, anatomy: Anatomy, grid: Grid, day: float,
                     midline_shift_mm: float, rng: np.random.Generator,
                     cavity_cm3: float = 0.0, treated: bool = True) -> str:
    """A report for one session. labels: BraTS labels on `grid`; day: days since diagnosis;
    cavity_cm3: volume of the resection cavity, if any; treated: False for natural history."""
    volumes = label_volumes_cm3(labels, grid.voxel_cm3)
    when = ("Pre-operative MRI brain with and without gadolinium." if day <= 0 else
            f"Follow-up MRI brain with and without gadolinium, day {int(round(day))} after "
            "diagnosis.")
    lines = [when, "", "Findings:"]
    whole = labels > 0
    if not whole.any():
        lines.append(_pick(rng, ("No residual enhancing or T2/FLAIR abnormality is seen.",
                                 "No evidence of residual or recurrent tumour.")))
        lines.append(_pick(rng, _NO_SHIFT))
        lines += ["", "Impression:", "No measurable disease."]
        return "\n".join(lines)
    core = (labels == ET) | (labels == NETC)
    if volumes["tc_cm3"] < 0.5:  # a few voxels are not a reportable mass
        core = np.zeros_like(core)
    side, lobe = _location(core if core.any() else whole, anatomy, grid)
    if core.any():
        a, b, c = _extent_cm(core, grid)
        has_necrosis = volumes["netc_cm3"] >= 0.5
        if volumes["et_cm3"] < 0.3:
            pattern = _pick(rng, ("non-enhancing", "predominantly non-enhancing"))
        elif has_necrosis:
            pattern = _pick(rng, ("rim-enhancing", "ring-enhancing", "peripherally enhancing"))
        else:
            pattern = _pick(rng, ("solidly enhancing", "nodular enhancing",
                                  "homogeneously enhancing"))
        lines.append(f"There is a {pattern} {_pick(rng, _MASS)} in the {side} {lobe} measuring "
                     f"{a:.1f} x {b:.1f} x {c:.1f} cm (tumour core {volumes['tc_cm3']:.1f} cm³, "
                     f"enhancing {volumes['et_cm3']:.1f} cm³).")
        if has_necrosis:
            lines.append(_pick(rng, (
                f"Central necrosis of about {volumes['netc_cm3']:.1f} cm³.",
                f"The centre is necrotic and non-enhancing ({volumes['netc_cm3']:.1f} cm³).",
                f"It contains a necrotic core of {volumes['netc_cm3']:.1f} cm³.")))
    else:
        lines.append(f"No enhancing tumour. Residual T2/FLAIR abnormality in the {side} {lobe}.")
    if day > 0 and not treated:
        lines.append("No treatment given since the previous examination.")
    elif day > 0 and cavity_cm3 >= 0.5:
        lines.append(_pick(rng, (f"Resection cavity of {cavity_cm3:.1f} cm³ with post-surgical "
                                 "and post-radiation changes.",
                                 f"Changes of prior resection ({cavity_cm3:.1f} cm³ cavity) and "
                                 "chemoradiation.")))
    elif day > 0:
        lines.append(_pick(rng, ("Post-radiation changes; no resection cavity (biopsy only).",
                                 "Changes of chemoradiation. No surgical cavity.")))
    snfh = volumes["snfh_cm3"]
    if snfh >= 0.5:
        degree = "extensive" if snfh > 60 else "moderate" if snfh > 20 else "mild"
        lines.append(f"There is {degree} {_pick(rng, _OEDEMA)} ({snfh:.1f} cm³; whole tumour "
                     f"{volumes['wt_cm3']:.1f} cm³).")
    if midline_shift_mm >= 1.0:
        away = "left" if side == "right" else "right"
        lines.append(_pick(rng, (f"Mass effect with {midline_shift_mm:.0f} mm midline shift to "
                                 f"the {away}.", f"Midline shift of {midline_shift_mm:.0f} mm "
                                 f"towards the {away}.")))
    else:
        lines.append(_pick(rng, _NO_SHIFT))
    lines += ["", "Impression:"]
    if day <= 0:
        lines.append(_pick(rng, ("Appearances are most in keeping with a high-grade glioma.",
                                 "Findings are consistent with glioblastoma.",
                                 "Likely high-grade glial neoplasm.")))
    elif not treated:
        lines.append("Untreated high-grade glioma; compare with the prior examination.")
    elif volumes["et_cm3"] >= 0.3:
        lines.append(_pick(rng, ("Enhancing disease present; recurrence versus treatment effect.",
                                 "Measurable enhancing tumour.")))
    else:
        lines.append(_pick(rng, ("No measurable enhancing disease.",
                                 "No enhancing tumour; T2/FLAIR change only.")))
    return "\n".join(lines)
