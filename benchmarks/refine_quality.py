"""Does diffusion refinement help? Per-region Dice and HD95 on held-out synthetic sessions, in
one run, for: the prior alone, prior + each refiner (conditional: prior noised to t′, few DDIM
steps) and each refiner unconditional (pure noise, no prior), with seconds per volume.

The held-out sessions are the prior model's test split (the refiners train on its train split).
All runs go through `segment_volumes`, the path `tumor segment --refine` takes, once without
post-processing; each is scored as it is ("no post-processing" rows) and with the small-region
rule `segment_volumes` would apply last: the prior's for the prior alone, each refiner's own
(config.json "postprocess", off when it has none) for its runs.

Run: python benchmarks/refine_quality.py --data COHORT [--prior resunet]
     [--refiners refine-medsegdiff refine-ddpm] [--steps 10] [--start T] [--samples 1] [--cases 35]
     [--markdown table.md] [--device auto]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--prior", default="resunet")
    parser.add_argument("--refiners", nargs="+", default=["refine-medsegdiff", "refine-ddpm"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--start", type=int, help="t′ the prior is noised to (default: each "
                        "refiner's own)")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--cases", type=int, default=0, help="0 = every test session")
    parser.add_argument("--unconditional-cases", type=int, default=8,
                        help="sessions for the (slow, weak) unconditional runs")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from tumorcli.infer.postprocess import LabelRule
    from tumorcli.infer.refine import RefineOptions, Refiner
    from tumorcli.infer.segment import Segmenter, find_model_folder, segment_volumes
    from tumorcli.io.volume import load_volume
    from tumorcli.metrics.evaluation import evaluate_case
    from tumorcli.metrics.regions import parse_labels
    from tumorcli.nets.weights import read_config
    from tumorcli.preprocess.inputs import read_scan
    from tumorcli.runtime import resolve_device
    from tumorcli.train.data import find_cases, read_split

    device = resolve_device(args.device)
    prior_folder = find_model_folder(args.prior)
    segmenter = Segmenter.load(prior_folder, device, postprocess=False)
    prior_rule = LabelRule.of_model(read_config(prior_folder))
    test = read_split(prior_folder)["test"]
    cases = [c for c in find_cases(args.data) if c.name in set(test)][:args.cases or None]
    runs = {"prior alone": (None, prior_rule)}   # name -> (refine options, its rule)
    rules = [f"prior {prior_rule.describe()}"]
    for name in args.refiners:
        folder = find_model_folder(name)
        refiner = Refiner.load(folder, device, postprocess=False)
        refiner.check_prior(segmenter.config, prior_folder)
        kind, rule = refiner.spec.refiner, LabelRule.of_model(read_config(folder))
        rules.append(f"{kind} {rule.describe()}")
        runs[f"prior + {kind}"] = (RefineOptions(refiner, args.steps, args.start, args.samples),
                                   rule)
        runs[f"{kind} unconditional"] = (RefineOptions(
            refiner, args.steps, None, args.samples, conditional=False), rule)
    rows = [(name, ruled) for name, (_, rule) in runs.items()
            for ruled in ((True, False) if rule.active else (True,))]
    label = lambda name, ruled: name if ruled else f"{name}, no post-processing"
    scores = {row: [] for row in rows}   # (run, with its rule) -> per-region scores
    seconds = {name: [] for name in runs}
    for index, case in enumerate(cases):
        volumes = {m: read_scan(case.images[m], m) for m in segmenter.config.modalities}
        reference = load_volume(case.seg)
        for name, (options, rule) in runs.items():
            if "unconditional" in name and index >= args.unconditional_cases:
                continue
            began = time.perf_counter()
            labels = segment_volumes(segmenter, volumes, refine=options).labels
            seconds[name].append(time.perf_counter() - began)
            ruled = labels.with_array(rule.apply(np.asarray(labels.array),
                                                 labels.voxel_volume_mm3 / 1000))
            for output, with_rule in ((ruled, True), (labels, False)):
                if (name, with_rule) in scores:
                    scores[name, with_rule] += evaluate_case(case.name, output, reference,
                                                             parse_labels())
        print(f"{case.name}: " + ", ".join(
            f"{label(*row)} {np.mean([s.dice for s in scores[row][-3:]]):.3f}"
            for row in scores if scores[row] and scores[row][-1].case == case.name), flush=True)

    header = ("| run | sessions | Dice TC | Dice WT | Dice ET | HD95 TC | HD95 WT | HD95 ET | "
              "median HD95 TC | WT | ET | s / volume |")
    start = "the refiner's t′" if args.start is None else f"t′ = {args.start}"
    lines = [f"{len(cases)} held-out sessions of {args.data} (prior {prior_folder.name}, "
             f"{args.steps} DDIM steps from {start}, {args.samples} sample(s), "
             f"post-processing: {'; '.join(rules)}; device {device})", "",
             header, "|" + "---|" * 12]
    for (name, ruled), rows in scores.items():
        if not rows:
            continue
        cells = [f"{np.mean([r.dice for r in rows if r.region == g]):.3f}"
                 for g in ("TC", "WT", "ET")]
        for average in (np.mean, np.median):
            cells += [f"{average([r.hd95_mm for r in rows if r.region == g]):.2f}"
                      for g in ("TC", "WT", "ET")]
        lines.append(f"| {label(name, ruled)} | {len(rows) // 3} | " + " | ".join(cells)
                     + f" | {np.mean(seconds[name]):.1f} |")
    lines += ["", "HD95: mean (and median) over sessions in mm; an empty prediction with a "
              "non-empty truth (or the reverse) scores 373.13 (BraTS). Seconds include the prior."]
    print("\n" + "\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
