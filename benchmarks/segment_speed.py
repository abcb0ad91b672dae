"""Seconds per subject for `tumor segment` (both shipped nets), split into stages, against a
MONAI-tutorial-style pipeline running the same weights at the scan's own 1 mm.

Ours: prepare (reorient, anti-aliased resample to the net's 2 mm, z-score), sliding window
(Gaussian blending, overlap 0.5), probabilities back to the input grid and labels. The peer:
MONAI's BraTS tutorial recipe (NormalizeIntensity(nonzero, channel_wise) on the 1 mm scans,
sliding_window_inference at 1 mm, sigmoid > 0.5): what a user gets by running a net without a
resolution plan. Both in one run, on the same subject, same device; also each net's Dice on it.

Run: python benchmarks/segment_speed.py [--subject sample_data/atlas/BraTS-GLI-00001-000]
     [--models resunet swinunetr] [--device auto] [--runs 3] [--tta]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def timed(function, runs: int):
    seconds, result = [], None
    for _ in range(runs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        began = time.perf_counter()
        result = function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), result


def monai_tutorial(segmenter, volumes) -> np.ndarray:
    from monai.inferers import sliding_window_inference
    from monai.transforms import NormalizeIntensity

    image = np.stack([np.asarray(volumes[m].array, np.float32)
                      for m in segmenter.config.modalities])
    image = NormalizeIntensity(nonzero=True, channel_wise=True)(torch.from_numpy(image))
    with torch.no_grad():
        logits = sliding_window_inference(image[None].to(segmenter.device),
                                          segmenter.config.patch, 2, segmenter.net,
                                          overlap=0.5, mode="gaussian")
    regions = torch.sigmoid(logits[0]).cpu()
    from tumorcli.nets.segmentation import labels_from_regions

    return labels_from_regions(regions).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subject", type=Path,
                        default=ROOT / "sample_data/atlas/BraTS-GLI-00001-000")
    parser.add_argument("--models", nargs="+", default=["resunet", "swinunetr"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()

    from tumorcli.infer.prepare import prepare
    from tumorcli.infer.segment import Segmenter, find_model_folder, segment_volumes
    from tumorcli.io.volume import load_volume
    from tumorcli.metrics.evaluation import evaluate_case
    from tumorcli.metrics.regions import parse_labels
    from tumorcli.preprocess.inputs import find_subject, read_scan
    from tumorcli.runtime import resolve_device

    device = resolve_device(args.device)
    subject = find_subject(args.subject)
    volumes = {m: read_scan(p, m) for m, p in subject.images.items()}
    truth = next(args.subject.glob("*seg.nii.gz"), None)
    print(f"subject {subject.name} {volumes['t1c'].shape} on {device} "
          f"({torch.get_num_threads()} threads), median of {args.runs}")
    print(f"{'model':10} {'prepare':>8} {'net':>8} {'total':>8} {'MONAI 1mm':>10} {'ratio':>6}"
          f"  Dice TC/WT/ET ours | MONAI 1mm")
    for name in args.models:
        segmenter = Segmenter.load(find_model_folder(name), device)
        config = segmenter.config
        prepare_s, prepared = timed(
            lambda: prepare(volumes, config.modalities, config.spacing_mm), args.runs)
        net_s, _ = timed(lambda: segmenter.probabilities(prepared.image, args.tta), args.runs)
        total_s, result = timed(lambda: segment_volumes(segmenter, volumes, args.tta), args.runs)
        peer_s, peer_labels = timed(lambda: monai_tutorial(segmenter, volumes), 1)
        scores = ""
        if truth is not None:
            reference = load_volume(truth)
            ours = evaluate_case("ours", result.labels, reference, parse_labels())
            theirs = evaluate_case("peer", result.labels.with_array(peer_labels), reference,
                                   parse_labels())
            scores = ("/".join(f"{s.dice:.3f}" for s in ours) + " | "
                      + "/".join(f"{s.dice:.3f}" for s in theirs))
        print(f"{name:10} {prepare_s:8.2f} {net_s:8.2f} {total_s:8.2f} {peer_s:10.2f} "
              f"{peer_s / total_s:6.1f}  {scores}")


if __name__ == "__main__":
    main()
