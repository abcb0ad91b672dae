"""Quality and speed of `tumor predict-growth` on held-out synthetic patients, next to the
baselines a clinician would use, in one run.

For every example of each held-out patient (the model's split.json test patients, or every
patient of an unseen cohort with --unseen): three earlier sessions → a later target session.
  - future whole-tumour mask: Dice of the model's mask (conditional mean, one call), of
    persistence (the last observed mask) and of linear volume extrapolation (the last mask
    grown or shrunk along its signed distance map to the volume the last two sessions'
    trend gives at the target day), overall and by forecast horizon (days after the last
    source);
  - images: PSNR (dB) / SSIM of t1n, t1c, t2f after the normal-tissue match (each image ÷ its
    median over brain voxels that are tumour in neither session), in the brain and around the
    tumour (labels of either session dilated 3 voxels), model vs identity (= last session);
  - conditioning: the longest-horizon example of each patient predicted with no treatment at
    the target day + 0, 60, 120, 180 days (slope of the predicted volume, cm³/day; > 0 expected
    for an untreated tumour), and at the true day with tmz vs none (volume(none) −
    volume(tmz) > 0 expected);
  - uncertainty (--samples N ≥ 2 on the same examples): the mean sd over N samples within
    2 voxels of the true target's tumour border, over that in brain ≥ 10 mm from any tumour;
  - seconds per prediction (one call; N samples × --steps).

Run: python benchmarks/growth_quality.py --data COHORT [--model growth] [--unseen]
     [--patients 12] [--samples 4] [--steps 10] [--markdown table.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from predict_post_quality import _spread   # mean ± sd, the same cells in both tables

HORIZONS = ((0, 90), (90, 180), (180, 10_000))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def extrapolated_mask(masks: list[np.ndarray], days: list[float], target_day: float,
                      spacing) -> np.ndarray:
    """The last mask resized along its signed distance map to the linear trend's volume."""
    from scipy import ndimage

    volumes = [m.sum() for m in masks[-2:]]
    rate = (volumes[1] - volumes[0]) / max(days[-1] - days[-2], 1e-6)
    wanted = max(volumes[1] + rate * (target_day - days[-1]), 0.0)
    last = masks[-1]
    if wanted == 0 or not last.any():
        return np.zeros_like(last)
    signed = (ndimage.distance_transform_edt(~last, sampling=spacing)
              - ndimage.distance_transform_edt(last, sampling=spacing))
    order = np.sort(signed.ravel())
    threshold = order[min(int(round(wanted)), len(order)) - 1]
    return signed <= threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="growth")
    parser.add_argument("--unseen", action="store_true")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    from tumorcli.infer.growth_inputs import read_session
    from tumorcli.infer.predict_growth import GrowthPredictor
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.metrics.image import ssim, psnr, default_data_range
    from tumorcli.metrics.image_regions import region_masks, tissue_normalised
    from tumorcli.nets.growth import MODALITIES
    from tumorcli.runtime import resolve_device
    from tumorcli.train.data import read_split
    from tumorcli.train.growth_data import examples_of, find_series

    folder = find_model_folder(args.model)
    predictor = GrowthPredictor.load(folder, resolve_device(args.device))
    test = set(read_split(folder)["test"])
    series = [s for s in find_series(args.data) if args.unseen or s.name in test][:args.patients]
    rows, effects, spreads, timings = [], [], [], {"one call": [], "samples": []}
    for patient in series:
        read = [read_session(f) for f in patient.folders]
        spacing = read[0][1].spacing
        voxel_cm3 = float(np.prod(spacing)) / 1000
        masks = [np.asarray(r[1].array) > 0 for r in read]
        examples = examples_of(len(read))
        for e, example in enumerate(examples):
            sources, target = list(example[:-1]), example[-1]
            began = time.perf_counter()
            call = lambda day, treatment, **kw: predictor.predict(
                [read[s][0] for s in sources], [read[s][1] for s in sources],
                [patient.days[s] for s in sources], [patient.treatments[s] for s in sources],
                day, treatment, **kw)
            result = call(patient.days[target], patient.treatments[target])
            timings["one call"].append(time.perf_counter() - began)
            truth = masks[target]
            horizon = patient.days[target] - patient.days[sources[-1]]
            row = {"patient": patient.name, "horizon": horizon,
                   "dice model": dice(np.asarray(result.mask.array) > 0, truth),
                   "dice persistence": dice(masks[sources[-1]], truth),
                   "dice linear": dice(extrapolated_mask([masks[s] for s in sources],
                                                         [patient.days[s] for s in sources],
                                                         patient.days[target], spacing), truth),
                   "true cm3": truth.sum() * voxel_cm3, "model cm3": result.volume_cm3}
            labels = (masks[target] | masks[sources[-1]]).astype(np.uint8)
            brain = np.asarray(read[target][0]["t1c"].array) != 0
            regions = region_masks(brain, labels)
            for modality in MODALITIES:
                ref = tissue_normalised(np.asarray(read[target][0][modality].array, np.float32),
                                        brain, labels)
                peak = default_data_range(ref, brain)
                for name, image in (("model", result.images[modality].array),
                                    ("identity", read[sources[-1]][0][modality].array)):
                    pred = tissue_normalised(np.asarray(image, np.float32), brain, labels)
                    row[f"{modality} psnr {name}"] = psnr(pred, ref, brain, peak)
                    row[f"{modality} ssim {name}"] = ssim(pred, ref, brain, peak)
                    row[f"{modality} psnr tumour {name}"] = psnr(pred, ref, regions["tumour"],
                                                                 peak)
            rows.append(row)
        # conditioning and uncertainty on the longest-horizon example
        example = max(examples, key=lambda x: patient.days[x[-1]] - patient.days[x[-2]])
        sources, target = list(example[:-1]), example[-1]
        given = predictor.inputs([read[s][0] for s in sources], [read[s][1] for s in sources])
        call = lambda day, treatment, **kw: predictor.predict(
            given, [], [patient.days[s] for s in sources],
            [patient.treatments[s] for s in sources], day, treatment, **kw)
        day = patient.days[target]
        later = [call(day + extra, "none").volume_cm3 for extra in (0, 60, 120, 180)]
        slope = float(np.polyfit([0, 60, 120, 180], later, 1)[0])
        effects.append({"slope": slope, "none - tmz": call(day, "none").volume_cm3
                        - call(day, "tmz").volume_cm3})
        if args.samples >= 2:
            began = time.perf_counter()
            sampled = call(day, patient.treatments[target], samples=args.samples,
                           steps=args.steps)
            timings["samples"].append(time.perf_counter() - began)
            spreads.append(uncertainty_ratio(np.asarray(sampled.uncertainty.array), masks,
                                             masks[target], spacing))
        print(f"{patient.name}: {len(examples)} examples, mean Dice model "
              f"{np.mean([r['dice model'] for r in rows[-len(examples):]]):.3f} vs persistence "
              f"{np.mean([r['dice persistence'] for r in rows[-len(examples):]]):.3f}", flush=True)
    report(rows, effects, spreads, timings, args)


def uncertainty_ratio(sd: np.ndarray, masks: list[np.ndarray], truth: np.ndarray, spacing
                      ) -> float:
    from scipy import ndimage

    brain = sd > 0
    border = (ndimage.binary_dilation(truth, iterations=2)
              & ~ndimage.binary_erosion(truth, iterations=2))
    any_tumour = np.logical_or.reduce(masks)
    far = brain & (ndimage.distance_transform_edt(~any_tumour, sampling=spacing) >= 10)
    if not border.any() or not far.any():
        return float("nan")
    return float(sd[border].mean() / max(sd[far].mean(), 1e-9))


def report(rows, effects, spreads, timings, args) -> None:
    from tumorcli.nets.growth import MODALITIES

    lines = [f"{len({r['patient'] for r in rows})} patients, {len(rows)} examples; model "
             f"{args.model}; Dice of the whole-tumour mask, mean ± sd over examples.", "",
             "| forecast horizon (days) | n | model | persistence | linear extrapolation |",
             "|---|---|---|---|---|"]
    for low, high in ((0, 10_000),) + HORIZONS:
        chosen = [r for r in rows if low <= r["horizon"] < high]
        if chosen:
            label = "all" if high == 10_000 and low == 0 else f"{low}–{high if high < 10_000 else '…'}"
            lines.append(f"| {label} | {len(chosen)} | " + " | ".join(
                _spread(np.array([r[f'dice {k}'] for r in chosen]), 3)
                for k in ("model", "persistence", "linear")) + " |")
    lines += ["", "| image (tissue-normalised) | model PSNR brain | identity PSNR brain | model "
              "PSNR tumour | identity PSNR tumour | model SSIM brain | identity SSIM brain |",
              "|---|---|---|---|---|---|---|"]
    for modality in MODALITIES:
        cell = lambda key: _spread(np.array([r[f"{modality} {key}"] for r in rows]), 2
                                   if "psnr" in key else 3)
        lines.append(f"| {modality} | {cell('psnr model')} | {cell('psnr identity')} | "
                     f"{cell('psnr tumour model')} | {cell('psnr tumour identity')} | "
                     f"{cell('ssim model')} | {cell('ssim identity')} |")
    slopes = np.array([e["slope"] for e in effects])
    swaps = np.array([e["none - tmz"] for e in effects])
    lines += ["", f"Conditioning ({len(effects)} patients, longest-horizon example): predicted "
              f"volume slope without treatment {_spread(slopes, 4)} cm³/day, > 0 in "
              f"{(slopes > 0).sum()}/{len(slopes)}; volume(none) − volume(tmz) at the true day "
              f"{_spread(swaps, 2)} cm³, > 0 in {(swaps > 0).sum()}/{len(swaps)}."]
    if spreads:
        lines.append(f"Uncertainty (sd over {args.samples} samples × {args.steps} DPM-Solver++ "
                     f"steps): tumour border / normal tissue {_spread(np.array(spreads), 2)}.")
    lines.append("Seconds per prediction (CPU threads as run): " + "; ".join(
        f"{k} {_spread(np.array(v), 1)}" for k, v in timings.items() if v))
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
