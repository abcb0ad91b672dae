"""Is segmentation robust to scanner bias? Dice/HD95 per region, stray components and pre-op ET
Dice on held-out synthetic sessions, clean and with a strong bias field on T2w and FLAIR, for
several segmentation models at once. The first model given is the "before": each other model is
compared with the first model given before it of the same architecture (config.json), else with
the first one, so `--models OLD_RESUNET OLD_SWIN NEW_RESUNET NEW_SWIN` gives both nets' before →
after.

Every session goes through the path `tumor segment` takes (`Segmenter.load` + `segment_volumes`
on the files as read): the net runs once without post-processing, and the model's label rule
(config.json "postprocess", what `tumor segment` applies) is then applied with the same
arguments `segment_volumes` uses, so each model is scored with its rule and, where it has one,
without it (`--no-postprocess`) at the price of one run.

Bias: T2w and T2-FLAIR are each multiplied by their own exp(amplitude × f), f a smooth zero-mean
unit-sd random field (`tumorcli.synth.grid.smooth_random_field`, 4 control points per axis as
the cohort synthesiser, whose own per-scan amplitude is 0.10–0.30, already in the data). f is
seeded by (--seed, session name, modality) only, so every model and every amplitude sees the
same field shape. Scores as `tumor evaluate` computes them (`evaluate_case`); a stray component
is a predicted tumour component (26-connected) of at least 1 cm³ that touches no true tumour
voxel, adjacency counting as touching (`tumorcli.metrics.components.stray_components`).
With --sample-data: the README demo, each labelled session of sample_data/atlas segmented as
`tumor segment -i sample_data/atlas` does (no added bias), per session.

Run: OMP_NUM_THREADS=1 python benchmarks/seg_robustness.py --data /work/data/seg60
     --split models/seg-resunet/split.json --models models/seg-resunet models/seg-swinunetr
     [--bias 0.0 0.6] [--sessions N] [--sample-data sample_data/atlas] [--threads 1]
     [--markdown out.md] [--seed 0] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REGIONS = ("TC", "WT", "ET")
BIASED = ("t2w", "t2f")
CONTROL_POINTS = 4   # as the cohort synthesiser's bias field (synth/contrast.py acquire)


@dataclass(frozen=True)
class CaseScore:
    case: str
    dice: dict            # region -> Dice
    hd95_mm: dict         # region -> HD95 in mm
    strays_cm3: list      # volumes of stray components ≥ 1 cm³
    seconds: float        # segment_volumes, including prepare and resampling back


def with_bias(volumes: dict, case: str, amplitude: float, seed: int) -> dict:
    """`volumes` with T2w and FLAIR each multiplied by exp(amplitude × its own smooth field)."""
    if amplitude == 0:
        return volumes
    from tumorcli.io.itk import Grid
    from tumorcli.synth.grid import smooth_random_field

    out = dict(volumes)
    for number, modality in enumerate(BIASED):
        volume = volumes[modality]
        rng = np.random.default_rng([seed, zlib.crc32(case.encode()), number])
        field = smooth_random_field(rng, Grid.of(volume), CONTROL_POINTS)  # (X, Y, Z)
        image = np.asarray(volume.array, np.float32) * np.exp(amplitude * field)
        out[modality] = volume.with_array(image.astype(np.float32))
    return out


def score(case: str, labels, reference) -> dict:
    from tumorcli.metrics.components import stray_components
    from tumorcli.metrics.evaluation import evaluate_case
    from tumorcli.metrics.regions import parse_labels

    regions = evaluate_case(case, labels, reference, parse_labels())
    strays = stray_components(np.asarray(labels.array), np.asarray(reference.array),
                              labels.spacing, min_cm3=1.0)
    return {"dice": {r.region: r.dice for r in regions},
            "hd95_mm": {r.region: r.hd95_mm for r in regions}, "strays_cm3": strays}


class Model:
    """A model folder loaded as `tumor segment` loads it; run() -> {with rule?: labels}."""

    def __init__(self, folder: Path, label: str, device) -> None:
        from tumorcli.infer.segment import Segmenter

        from tumorcli.nets.weights import read_config

        self.folder, self.label = folder, label
        self.architecture = read_config(folder).get("architecture", "?")
        self.rule = Segmenter.load(folder, device).label_rule   # what tumor segment applies
        self.segmenter = Segmenter.load(folder, device, postprocess=False)

    def run(self, volumes: dict) -> tuple[dict, float]:
        from tumorcli.infer.segment import segment_volumes

        began = time.perf_counter()
        raw = segment_volumes(self.segmenter, volumes).labels
        ruled = raw.with_array(self.rule.apply(np.asarray(raw.array), raw.voxel_volume_mm3 / 1000,
                                               raw.spacing))
        seconds = time.perf_counter() - began
        return ({True: ruled, False: raw} if self.rule.active else {True: ruled}), seconds


def split_notes(models: list[Model], test: list[str]) -> list[str]:
    """A line for each model whose own split does not hold these test sessions out."""
    from tumorcli.train.data import read_split

    notes = []
    for model in models:
        try:
            own = read_split(model.folder)
        except Exception:  # a model without split.json: nothing to check
            continue
        trained = set(own.get("train", [])) | set(own.get("val", []))
        seen = sorted(trained & set(test))
        if seen:
            notes.append(f"WARNING: {model.label} trained or validated on {len(seen)} of these "
                         f"test sessions (e.g. {seen[0]})")
    return notes


def condition_table(title: str, models: list[Model], scores: dict) -> list[str]:
    """Markdown: one row per (model, with/without rule), then differences against each one's
    baseline (`baseline_of`)."""
    header = ("| model | post-processing | sessions | Dice TC | Dice WT | Dice ET | HD95 TC | "
              "HD95 WT | HD95 ET | strays ≥ 1 cm³ / session | strays total | sessions with a "
              "stray | largest stray cm³ | ET Dice pre-op (n) | s / case |")
    lines = [f"### {title}", "", header, "|" + "---|" * 15]
    summaries = {}
    for model in models:
        for ruled in (True, False):
            rows = scores.get((model.label, ruled))
            if not rows:
                continue
            summary = summarise(rows)
            summaries[model.label, ruled] = summary
            lines.append(f"| {model.label} | {rule_name(model, ruled)} | {len(rows)} | "
                         + " | ".join(cells(summary)) + " |")
    deltas = []
    for model in models[1:]:
        base = baseline_of(model, models).label
        for ruled in (True, False):
            if (model.label, ruled) in summaries and (base, ruled) in summaries:
                deltas.append(f"| {model.label} − {base} | {'on' if ruled else 'off'} | | "
                              + " | ".join(delta_cells(summaries[model.label, ruled],
                                                       summaries[base, ruled])) + " |")
    if deltas:
        lines += ["", "Against the before (differences; seconds as a ratio):", "",
                  header.replace("| model |", "| models |"), "|" + "---|" * 15, *deltas]
    return lines + [""]


def baseline_of(model: Model, models: list[Model]) -> Model:
    """The first model listed before `model` with its architecture, else the first model."""
    earlier = models[:models.index(model)]
    return next((m for m in earlier if m.architecture == model.architecture), models[0])


def rule_name(model: Model, ruled: bool) -> str:
    return model.rule.describe() if ruled and model.rule.active else \
        ("none (the model has no rule)" if ruled else "off (--no-postprocess)")


def summarise(rows: list[CaseScore]) -> dict:
    strays = [len(r.strays_cm3) for r in rows]
    preop = [r.dice["ET"] for r in rows if r.case.endswith("-000")]
    return {"dice": {g: float(np.mean([r.dice[g] for r in rows])) for g in REGIONS},
            "hd95": {g: float(np.mean([r.hd95_mm[g] for r in rows])) for g in REGIONS},
            "strays_mean": float(np.mean(strays)), "strays_total": int(np.sum(strays)),
            "sessions_with_stray": int(np.count_nonzero(strays)),
            "largest_stray": max((v for r in rows for v in r.strays_cm3), default=0.0),
            "preop_et": float(np.mean(preop)) if preop else float("nan"), "preop_n": len(preop),
            "seconds": float(np.mean([r.seconds for r in rows]))}


def cells(s: dict) -> list[str]:
    return ([f"{s['dice'][g]:.3f}" for g in REGIONS] + [f"{s['hd95'][g]:.2f}" for g in REGIONS]
            + [f"{s['strays_mean']:.2f}", str(s["strays_total"]), str(s["sessions_with_stray"]),
               f"{s['largest_stray']:.1f}", f"{s['preop_et']:.3f} ({s['preop_n']})",
               f"{s['seconds']:.2f}"])


def delta_cells(s: dict, base: dict) -> list[str]:
    return ([f"{s['dice'][g] - base['dice'][g]:+.3f}" for g in REGIONS]
            + [f"{s['hd95'][g] - base['hd95'][g]:+.2f}" for g in REGIONS]
            + [f"{s['strays_mean'] - base['strays_mean']:+.2f}",
               f"{s['strays_total'] - base['strays_total']:+d}",
               f"{s['sessions_with_stray'] - base['sessions_with_stray']:+d}",
               f"{s['largest_stray'] - base['largest_stray']:+.1f}",
               f"{s['preop_et'] - base['preop_et']:+.3f}",
               f"×{s['seconds'] / max(base['seconds'], 1e-9):.2f}"])


def sample_table(models: list[Model], scores: dict) -> list[str]:
    """Markdown: the README demo, per sample session and model (with the model's rule)."""
    order = ("WT", "TC", "ET")
    header = ("| session | model | Dice WT | Dice TC | Dice ET | HD95 WT | HD95 TC | HD95 ET | "
              "strays ≥ 1 cm³ (cm³) | s |")
    lines = ["### README demo: sample_data, as `tumor segment -i sample_data/atlas` (no added "
             "bias, each model's rule)", "", header, "|" + "---|" * 10]
    cases = [r.case for r in scores[models[0].label]]
    for index, case in enumerate(cases):
        for model in models:
            r = scores[model.label][index]
            lines.append(f"| {case} | {model.label} | "
                         + " | ".join(f"{r.dice[g]:.3f}" for g in order) + " | "
                         + " | ".join(f"{r.hd95_mm[g]:.2f}" for g in order)
                         + f" | {', '.join(f'{v:.1f}' for v in r.strays_cm3) or '–'}"
                         + f" | {r.seconds:.1f} |")
    for model in models:
        rows = scores[model.label]
        worst = max(r.hd95_mm["WT"] for r in rows)
        lines.append(f"| mean (worst WT HD95 {worst:.2f}) | {model.label} | "
                     + " | ".join(f"{np.mean([r.dice[g] for r in rows]):.3f}" for g in order)
                     + " | " + " | ".join(f"{np.mean([r.hd95_mm[g] for r in rows]):.2f}"
                                          for g in order)
                     + f" | {sum(len(r.strays_cm3) for r in rows)} in all"
                     + f" | {np.mean([r.seconds for r in rows]):.1f} |")
    for model in models[1:]:
        before = baseline_of(model, models).label
        lines += ["", f"{model.label} − {before} per session (Dice WT/TC/ET, HD95 WT/TC/ET, "
                  "strays):", ""]
        for mine, base in zip(scores[model.label], scores[before]):
            lines.append(f"- {mine.case}: Dice " + "/".join(
                f"{mine.dice[g] - base.dice[g]:+.3f}" for g in order) + ", HD95 " + "/".join(
                f"{mine.hd95_mm[g] - base.hd95_mm[g]:+.2f}" for g in order)
                + f", strays {len(mine.strays_cm3) - len(base.strays_cm3):+d}")
    return lines + [""]


def labels_of(folders: list[Path]) -> list[str]:
    """Folder names, or paths where two names clash (numbered where a path is given twice)."""
    names = [folder.name for folder in folders]
    if len(set(names)) < len(names):
        names = [str(folder) for folder in folders]
    return [name if names.count(name) == 1 else f"{name} #{names[:i].count(name) + 1}"
            for i, name in enumerate(names)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the labelled cohort")
    parser.add_argument("--split", type=Path, required=True,
                        help="split.json whose 'test' sessions are scored")
    parser.add_argument("--models", nargs="+", required=True,
                        help="model folders or names; the first of each architecture is the "
                        "'before'")
    parser.add_argument("--bias", nargs="+", type=float, default=[0.0, 0.6],
                        help="amplitudes of the added T2w/FLAIR bias field (0 = as read)")
    parser.add_argument("--sessions", type=int, default=0, help="first N test sessions; 0 = all")
    parser.add_argument("--sample-data", type=Path, help="also the README demo on this cohort")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seeds the bias fields")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args()

    import torch

    from tumorcli.infer.segment import find_model_folder
    from tumorcli.io.volume import load_volume
    from tumorcli.preprocess.inputs import read_scan
    from tumorcli.runtime import resolve_device, seed_everything
    from tumorcli.train.data import find_cases

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    folders = [find_model_folder(name) for name in args.models]
    models = [Model(folder, label, device) for folder, label in zip(folders, labels_of(folders))]
    test = json.loads(args.split.read_text())["test"]
    cases = [c for c in find_cases(args.data) if c.name in set(test)][:args.sessions or None]
    log = lambda text: print(text, file=sys.stderr, flush=True)

    lines = [f"## Segmentation robustness: {len(cases)} held-out sessions of {args.data} "
             f"(test list of {args.split})", "",
             f"Models: {', '.join(f'{m.label} ({m.folder})' for m in models)}; the first of each "
             f"architecture is the 'before'. Device {device}, {args.threads} thread(s), bias seed {args.seed}.",
             *split_notes(models, test), ""]
    for amplitude in args.bias:
        scores: dict = {}   # (model label, with rule) -> [CaseScore]
        for case in cases:
            reference = load_volume(case.seg)
            volumes = with_bias({m: read_scan(case.images[m], m) for m in case.images},
                                case.name, amplitude, args.seed)
            for model in models:
                outputs, seconds = model.run(volumes)
                for ruled, labels in outputs.items():
                    scores.setdefault((model.label, ruled), []).append(
                        CaseScore(case.name, **score(case.name, labels, reference),
                                  seconds=seconds))
            log(f"bias {amplitude:g} {case.name}: " + ", ".join(
                f"{label}{'' if ruled else ' raw'} WT {rows[-1].dice['WT']:.3f} strays "
                f"{len(rows[-1].strays_cm3)}" for (label, ruled), rows in scores.items()))
        title = ("No added bias (the sessions as read)" if amplitude == 0 else
                 f"Added bias: T2w and FLAIR each × exp({amplitude:g} × smooth field), "
                 f"{CONTROL_POINTS} control points per axis")
        lines += condition_table(title, models, scores)

    if args.sample_data is not None:
        samples: dict = {}
        for case in find_cases(args.sample_data):
            reference = load_volume(case.seg)
            volumes = {m: read_scan(case.images[m], m) for m in case.images}
            for model in models:
                outputs, seconds = model.run(volumes)
                samples.setdefault(model.label, []).append(
                    CaseScore(case.name, **score(case.name, outputs[True], reference),
                              seconds=seconds))
            log(f"sample {case.name}: " + ", ".join(
                f"{label} WT HD95 {rows[-1].hd95_mm['WT']:.2f}" for label, rows in samples.items()))
        lines += sample_table(models, samples)

    lines += ["HD95 in mm, mean over sessions; an empty prediction with a non-empty truth (or "
              "the reverse) scores 373.13 mm (BraTS). Stray: a predicted tumour component "
              "(26-connected) of ≥ 1 cm³ touching no true tumour voxel (adjacent counts as "
              "touching). ET Dice pre-op: sessions -000. Seconds: segment_volumes per session "
              "(prepare, net, back to the input grid, rule)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown is not None:
        from tumorcli.io.atomic import atomic_file

        with atomic_file(args.markdown) as temporary:
            temporary.write_text(text)


if __name__ == "__main__":
    main()
