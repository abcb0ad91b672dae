"""Held-out scores of a trained segmentation model and its model card (card.md)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tumorcli.io.atomic import atomic_file
from tumorcli.metrics.evaluation import COLUMNS, evaluate_case, mean_rows
from tumorcli.metrics.regions import parse_labels
from tumorcli.metrics.tables import write_rows

TEST_METRICS = "test_metrics.csv"


def score_test_cases(folder: Path, cases: list, device: torch.device, tta: bool = False) -> dict:
    """Segment each test case with the saved best weights (the `tumor segment` path), score it
    against its mask, write test_metrics.csv; returns per-region means and seconds per case."""
    from tumorcli.infer.segment import Segmenter, segment_volumes
    from tumorcli.io.volume import load_volume
    from tumorcli.preprocess.inputs import read_scan

    segmenter = Segmenter.load(folder, device)
    scores, seconds = [], []
    for case in cases:
        volumes = {m: read_scan(case.images[m], m) for m in segmenter.config.modalities}
        began = time.perf_counter()
        result = segment_volumes(segmenter, volumes, tta)
        seconds.append(time.perf_counter() - began)
        scores += evaluate_case(case.name, result.labels, load_volume(case.seg), parse_labels())
    means = mean_rows(scores)
    write_rows(folder / TEST_METRICS, COLUMNS, [s.row() for s in scores] + means)
    by_region = {row["region"]: {"dice": row["dice"], "hd95_mm": row["hd95_mm"]} for row in means}
    return {"cases": len(cases), "regions": by_region,
            "mean_dice": float(np.mean([r["dice"] for r in by_region.values()])) if means else None,
            "seconds_per_case": float(np.mean(seconds)) if seconds else None,
            "device": str(device), "tta": tta}


def _by_session(metrics: Path) -> list[str]:
    """Mean Dice / median HD95 per session number (case ids ending in -NNN), as card lines.
    Follow-ups often have no TC/ET at all: any false positive there scores Dice 0, HD95 373."""
    import csv
    import re

    rows = [row for row in csv.DictReader(open(metrics)) if row["case"] != "mean"]
    sessions = sorted({m.group(1) for row in rows if (m := re.search(r"-(\d{3})$", row["case"]))})
    if len(sessions) < 2:
        return []
    lines = ["By session (mean Dice / median HD95 mm):", "",
             "| session | cases | TC | WT | ET |", "|---|---|---|---|---|"]
    for session in sessions:
        cells = []
        for region in ("TC", "WT", "ET"):
            own = [row for row in rows if row["case"].endswith("-" + session)
                   and row["region"] == region]
            cells.append(f"{np.mean([float(r['dice']) for r in own]):.3f} / "
                         f"{np.median([float(r['hd95_mm']) for r in own]):.1f}")
        lines.append(f"| {session} | {len(own)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _cohort_command(data: Path) -> str | None:
    """The `tumor synth-cohort` command that made `data`, from its cohort.json (None otherwise)."""
    try:
        saved = json.loads((data / "cohort.json").read_text())
        settings = saved["config"]
    except (OSError, ValueError, KeyError):
        return None
    if saved.get("generator") != "tumor synth-cohort":
        return None
    return (f"tumor synth-cohort -o {data.name} --subjects {settings['subjects']} --sessions "
            f"{settings['sessions']} --space {settings['space']} --size {settings['size']} "
            f"--seed {settings['seed']}" + ("" if settings.get("treated", True) else " --untreated"))


def _postprocess_line(tuned: dict | None) -> str | None:
    if not tuned:
        return None
    from tumorcli.infer.postprocess import LabelRule

    dice = [np.mean(tuned[f"dice_{when}"]) for when in ("before", "after")]
    hd95 = [np.mean(tuned[f"hd95_mm_{when}"]) for when in ("before", "after")]
    return (f"- Post-processing (chosen on {tuned['tuned_on']}): "
            f"{LabelRule.from_dict(tuned).describe()}; there mean Dice {dice[0]:.3f} → "
            f"{dice[1]:.3f}, mean HD95 {hd95[0]:.1f} → {hd95[1]:.1f} mm. The test scores below "
            "include it.")


def write_segmentation_card(folder: Path, net_config, config, summary: dict, split: dict) -> Path:
    """card.md: what the model is, the data and command that made it, and its held-out scores."""
    test = summary.get("test") or {}
    lines = [f"# {folder.name}: {net_config.architecture} for BraTS regions", "",
             f"- Network: {net_config.architecture}, {summary['parameters'] / 1e6:.2f} M "
             "parameters, 4 inputs (t1n, t1c, t2w, t2f, z-scored in the brain), sigmoid "
             "outputs TC / WT / ET, labels by nesting (WT→2, TC→1, ET→3).",
             f"- Works at {net_config.spacing_mm} mm isotropic, LPS axes, patch "
             f"{'×'.join(map(str, net_config.patch))}; inputs are resampled to it and the "
             "probabilities back to the input grid.",
             f"- Data: `{config.data}`; split by patient with seed {config.seed}: "
             f"{len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test "
             "sessions (split.json).",
             f"- Training: {config.epochs} epochs × {config.steps_per_epoch} steps, batch "
             f"{config.batch_size}, AdamW lr {config.lr} wd {config.weight_decay}, warm-up "
             f"{config.warmup_steps} steps then cosine, Dice + BCE, tumour-biased patches, "
             f"{summary['seconds'] / 60:.0f} min on {platform.machine()} "
             f"({'GPU' if 'cuda' in str(test.get('device', '')) else 'CPU'}).",
             f"- Command: `{config.command}`" if config.command else "",
             f"- Best validation Dice (mean TC/WT/ET): {summary['best_val_dice']:.3f} at epoch "
             f"{summary['best_epoch']}; weights are that epoch's, fp16.",
             _postprocess_line(summary.get("postprocess")), ""]
    if test and test.get("cases"):
        lines += [f"## Held-out test scores ({test['cases']} sessions, `tumor segment` path, "
                  f"no TTA)", "", "| region | Dice | HD95 mm |", "|---|---|---|"]
        for region, row in test["regions"].items():
            lines.append(f"| {region} | {row['dice']:.3f} | {row['hd95_mm']:.2f} |")
        lines += ["", f"Mean Dice {test['mean_dice']:.3f}; {test['seconds_per_case']:.1f} s per "
                  f"case on {test['device']}. Per case: test_metrics.csv.", ""]
        lines += _by_session(folder / TEST_METRICS)
    made_by = _cohort_command(Path(config.data))
    if made_by:
        lines += [f"Data made by `{made_by}`.", ""]
    lines += ["Synthetic data only (tumor synth-cohort): these scores say the pipeline learns; "
              "they are not clinical performance.", ""]
    path = folder / "card.md"
    with atomic_file(path) as temporary:
        temporary.write_text("\n".join(line for line in lines if line is not None) + "\n")
    with atomic_file(folder / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path
