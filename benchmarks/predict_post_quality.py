"""Quality and speed of `tumor predict-post` on held-out synthetic patients, in one run, next to
the identity baseline (post = pre) and the deterministic peer (benchmarks/post_peer.py).

For each held-out patient (the model's split.json test patients, or every patient of an unseen
cohort with --unseen), pre = the first session, post = the session the model was trained on:
  - identity (post = pre)
  - the peer: a 2D U-Net with an L1 loss on the same inputs, pairs and wall-clock time (--peer)
  - the model's default output (*): its conditional-mean estimate, one guided denoiser call
    from pure noise (POSTERIOR_MEAN); the same without the pre scan's detail added back, with
    the detail added beyond other margins (--margins), with the flipped survival class and at
    other guidance weights (--guidances)
  - the mean of k of the same N sampled follow-ups, k = 1, 2, 4, … N (--samples N,
    DPM-Solver++ --sample-steps, guidance 2)
Scores: PSNR (dB) / SSIM in 3D after `--normalize tissue` (each image ÷ its median over brain
voxels that are tumour in neither session), in the brain, around the tumour (either session's
labels dilated 3 voxels) and in the rest of the brain; plus brain PSNR/SSIM after the
percentile normalisation (brain 0.5–99.5th → 0–1, BraSyn-style) and on raw intensities.
Class effect: in patients with ≥ 1 cm³ of enhancing tumour at follow-up, the tissue-normalised
prediction's mean inside it, short − long class (> 0: the true direction, short survivors
regrow). Slice roughness: mean |difference between neighbouring axial slices| / the truth's.

Run: python benchmarks/predict_post_quality.py --data COHORT [--model predict-post]
     [--unseen | --split val] [--patients 12] [--samples 4] [--sample-steps 20]
     [--class-samples] [--peer PEER] [--margins MM …] [--guidances W …] [--post next|last]
     [--markdown table.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def slice_roughness(volume: np.ndarray, brain: np.ndarray) -> float:
    """Mean |v[:, :, k+1] − v[:, :, k]| over voxels in the brain on both slices."""
    both = brain[:, :, 1:] & brain[:, :, :-1]
    return float(np.abs(np.diff(volume, axis=2))[both].mean())


def followup_enhancing(post_seg: Path) -> np.ndarray | None:
    """The true follow-up's enhancing tumour (label 3) when it holds at least 1 cm³, else None."""
    from tumorcli.io.volume import load_volume

    volume = load_volume(post_seg)
    enhancing = np.asarray(volume.array) == 3
    return enhancing if enhancing.sum() * volume.voxel_volume_mm3 >= 1000 else None


def scored(prediction: np.ndarray, truth: np.ndarray, brain: np.ndarray, labels: np.ndarray
           ) -> dict[str, float]:
    """Tissue-normalised brain / tumour / rest PSNR and SSIM, percentile and raw brain ones."""
    from tumorcli.metrics.image import percentile_normalised, psnr, ssim
    from tumorcli.metrics.image_regions import region_scores, tissue_normalised

    pred_t, truth_t = (tissue_normalised(v, brain, labels) for v in (prediction, truth))
    pred_p, truth_p = (percentile_normalised(v, brain) for v in (prediction, truth))
    return {"psnr": psnr(pred_t, truth_t, brain), "ssim": ssim(pred_t, truth_t, brain),
            **{k.replace("_3d", ""): v for k, v in
               region_scores(pred_t, truth_t, brain, labels).items()},
            "psnr_pct": psnr(pred_p, truth_p, brain, 1.0),
            "ssim_pct": ssim(pred_p, truth_p, brain, 1.0),
            "psnr_raw": psnr(prediction, truth, brain), "ssim_raw": ssim(prediction, truth, brain)}


COLUMNS = (("psnr", "PSNR brain", 2), ("ssim", "SSIM brain", 3),
           ("psnr_tumour", "PSNR tumour", 2), ("ssim_tumour", "SSIM tumour", 3),
           ("psnr_rest", "PSNR rest", 2), ("ssim_rest", "SSIM rest", 3),
           ("psnr_pct", "PSNR brain, pct", 2), ("ssim_pct", "SSIM brain, pct", 3),
           ("psnr_raw", "PSNR brain, raw", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="predict-post")
    parser.add_argument("--unseen", action="store_true",
                        help="score every patient of --data (a cohort the model never saw)")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="which of the model's patients to score (val: to choose settings)")
    parser.add_argument("--settings-only", action="store_true",
                        help="only identity, the sample means and the margins (to choose them)")
    parser.add_argument("--margins", type=float, nargs="*", default=[],
                        help="also score the default with the detail added beyond these mm")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--samples", type=int, default=4,
                        help="N: samples drawn per patient for the mean-of-samples rows (0: none)")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--class-samples", action="store_true",
                        help="also measure the class effect on the mean of samples")
    parser.add_argument("--guidances", type=float, nargs="*", default=[1.0, 4.0],
                        help="also score the conditional mean at these guidance weights")
    parser.add_argument("--peer", type=Path, help="a folder from benchmarks/post_peer.py")
    parser.add_argument("--post", choices=("next", "last"),
                        help="which follow-up to score against (default: the one the model "
                        "was trained on)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--markdown", type=Path, help="also write the tables here (model cards)")
    args = parser.parse_args()

    from tumorcli.infer.predict_post import POSTERIOR_MEAN, PostPredictor, detail_weight
    from tumorcli.io.itk import Grid
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.io.volume import load_volume
    from tumorcli.metrics.image_regions import tissue_normalised
    from tumorcli.nets.weights import read_config
    from tumorcli.runtime import resolve_device
    from tumorcli.train.data import read_split
    from tumorcli.train.post_data import find_pairs

    folder = find_model_folder(args.model)
    predictor = PostPredictor.load(folder, resolve_device(args.device))
    config = predictor.config
    post = args.post or read_config(folder).get("training", {}).get("post_session", "next")
    chosen_split = set(read_split(folder)[args.split])
    pairs = [p for p in find_pairs(args.data, post)
             if args.unseen or p.name in chosen_split][:args.patients]
    peer = None
    if args.peer:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from post_peer import PeerPredictor

        peer = PeerPredictor(args.peer, config.spacing_mm, config.intensity)
    counts = [k for k in (1, 2, 4, 8, 16) if k < args.samples] + [args.samples]
    default = "model, conditional mean (1 call) *"
    flip = {"short": "long", "long": "short"}
    scores: dict[str, list[dict]] = {}
    seconds: dict[str, list[float]] = {}
    class_effect, sample_effect, roughness = [], [], []

    def add(name, prediction, took=None):
        scores.setdefault(name, []).append(scored(prediction, truth, brain, labels))
        if took is not None:
            seconds.setdefault(name, []).append(took)

    def timed(**options):
        began = time.perf_counter()
        result = predictor.predict(pre, mask, **options)
        return result, time.perf_counter() - began

    for index, pair in enumerate(pairs):
        pre, mask, post_scan, post_labels = (load_volume(p) for p in (
            pair.pre_t1c, pair.pre_seg, pair.post_t1c, pair.post_seg))
        truth = np.asarray(post_scan.array, np.float32)
        brain = truth > 0
        labels = (np.asarray(mask.array) > 0) | (np.asarray(post_labels.array) > 0)
        add("identity (post = pre)", np.asarray(pre.array, np.float32))
        if peer is not None:
            began = time.perf_counter()
            add("peer: 2D U-Net, L1", peer.predict(pre, mask, pair.survival),
                time.perf_counter() - began)
        result, took = timed(survival=pair.survival, **POSTERIOR_MEAN)
        add(default, result.mean.array, took)
        plain = result.mean.array - (0 if result.detail is None else result.detail)
        add("model, conditional mean, no detail added", plain)
        for margin in args.margins:   # the detail margin (mm; ramp as the model's)
            weight = detail_weight(np.asarray(mask.array) > 0, Grid.of(pre).spacing, margin,
                                   config.detail_ramp_mm)
            add(f"model, conditional mean, detail beyond {margin:g} mm",
                plain + weight * result.lost)
        if not args.settings_only:
            flipped, _ = timed(survival=flip[pair.survival], **POSTERIOR_MEAN)
            add("model, conditional mean, flipped class", flipped.mean.array)
            means = {pair.survival: result.mean.array, flip[pair.survival]: flipped.mean.array}
        for guidance in args.guidances:
            other, _ = timed(survival=pair.survival, guidance=guidance, **POSTERIOR_MEAN)
            add(f"model, conditional mean, guidance {guidance:g}", other.mean.array)
        if args.samples:
            drawn, took = timed(survival=pair.survival, samples=args.samples,
                                steps=args.sample_steps)
            for k in counts:
                add(f"model, mean of {k} DPM++ {args.sample_steps}-step samples",
                    np.mean(drawn.samples[:k], axis=0))
            seconds.setdefault(f"model, {args.samples} samples in one batch", []).append(took)
        regrowth = followup_enhancing(pair.post_seg)
        if regrowth is not None and not args.settings_only:
            inside = lambda v: tissue_normalised(v, brain, labels)[regrowth].mean()
            class_effect.append(inside(means["short"]) - inside(means["long"]))
            if args.samples and args.class_samples:
                other, _ = timed(survival=flip[pair.survival], samples=args.samples,
                                 steps=args.sample_steps)
                sampled = {pair.survival: drawn.mean.array,
                           flip[pair.survival]: other.mean.array}
                sample_effect.append(inside(sampled["short"]) - inside(sampled["long"]))
        roughness.append(slice_roughness(result.mean.array, brain)
                         / slice_roughness(truth, brain))
        print(f"{pair.name}: {pair.survival}; conditional mean "
              f"{scores[default][-1]['psnr']:.2f} / {scores[default][-1]['psnr_tumour']:.2f} "
              f"dB (brain / tumour) vs identity "
              f"{scores['identity (post = pre)'][-1]['psnr']:.2f} / "
              f"{scores['identity (post = pre)'][-1]['psnr_tumour']:.2f}", flush=True)

    where = (f"every patient of {args.data} (unseen cohort)" if args.unseen
             else f"{args.split} split")
    lines = [f"{len(pairs)} patients ({where}, post = the {post} follow-up); model {folder}; device "
             f"{predictor.device}; guidance 2 unless said; * = the "
             "shipped default. PSNR dB / SSIM, mean ± sd over patients; tissue-normalised "
             "unless said.", "",
             "| prediction | n | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for name, rows in scores.items():
        cells = [_spread(np.array([row[key] for row in rows]), digits)
                 for key, _, digits in COLUMNS]
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    effect, sampled = np.array(class_effect), np.array(sample_effect)
    lines += ["", f"Class effect ({len(effect)} patients with ≥ 1 cm³ of enhancing tumour at "
              "follow-up; tissue-normalised prediction inside it, short − long; > 0 is the "
              f"true direction): conditional mean {_spread(effect, 3)}, positive in "
              f"{int((effect > 0).sum())}/{len(effect)}"
              + (f"; mean of {args.samples} samples {_spread(sampled, 3)}, positive in "
                 f"{int((sampled > 0).sum())}/{len(sampled)}" if len(sampled) else "") + ".",
              f"Slice roughness of the default / the truth's: {_spread(np.array(roughness), 3)}.",
              "", "| timing | n | seconds per volume |", "|---|---|---|"]
    lines += [f"| {name} | {len(values)} | {_spread(np.array(values), 1)} |"
              for name, values in seconds.items()]
    print("\n" + "\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


def _spread(values: np.ndarray, digits: int) -> str:
    """mean ± sample sd (no sd for one value)"""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return "–"
    sd = f"{values.std(ddof=1):.{digits}f}" if len(values) > 1 else "–"
    return f"{values.mean():.{digits}f} ± {sd}"


if __name__ == "__main__":
    main()
