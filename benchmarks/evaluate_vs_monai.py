"""`tumor evaluate`'s metrics against MONAI on the same synthetic cases, in the same run.

Each case is a BraTS-like label map (NETC/SNFH/ET, a lumpy tumour and a satellite) and a
prediction that differs from it by a shift and a different lumpiness. Both sides score TC, WT and
ET: Dice and HD95 (percentile 95, voxel spacing in mm).

- ours:  `evaluate_case` from the two label arrays (label checks, counts, crops, distances).
- MONAI: `compute_dice` + `compute_hausdorff_distance(percentile=95, spacing=…)` on one-hot
  tensors built beforehand (their construction is not timed, which favours MONAI).
Also printed: the largest Dice and HD95 differences between the two over all cases.

Run: python benchmarks/evaluate_vs_monai.py --cases 10 --size full   (full = 240×240×155, 1 mm;
small = 96×96×64 with 1.0×1.2×2.5 mm voxels; --torch-threads 1 when other work shares the CPU,
since MONAI's torch steps slow down sharply when their threads compete)
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

SIZES = {"full": ((240, 240, 155), (1.0, 1.0, 1.0)), "small": ((96, 96, 64), (1.0, 1.2, 2.5))}


def lumpy_tumour(shape, rng, centre, radius: float) -> np.ndarray:
    """(X, Y, Z) uint8 labels: SNFH shell, ET rim, NETC core, with smooth random bumps."""
    from scipy.ndimage import gaussian_filter, zoom

    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    distance = np.sqrt(sum((grid[i] - centre[i]) ** 2 for i in range(3)))
    coarse = gaussian_filter(rng.standard_normal(tuple(max(n // 8, 2) for n in shape)), 1.0)
    bumps = zoom(coarse, [n / c for n, c in zip(shape, coarse.shape)], order=1)[
        :shape[0], :shape[1], :shape[2]]
    lumpy = distance + bumps * radius * 1.5
    labels = np.zeros(shape, np.uint8)
    labels[lumpy < radius] = 2
    labels[lumpy < 0.6 * radius] = 3
    labels[lumpy < 0.35 * radius] = 1
    return labels


def make_case(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) label maps of one case."""
    rng = np.random.default_rng(seed)
    centre = [n * rng.uniform(0.35, 0.65) for n in shape]
    radius = min(shape) * rng.uniform(0.12, 0.2)
    reference = lumpy_tumour(shape, rng, centre, radius)
    shifted = [c + rng.uniform(-2, 2) for c in centre]
    prediction = lumpy_tumour(shape, rng, shifted, radius * rng.uniform(0.9, 1.1))
    satellite = tuple(slice(int(c) + int(radius * 1.6), int(c) + int(radius * 1.6) + 4)
                      for c in centre)
    reference[satellite] = 3  # a small extra ET lesion only in the reference
    return prediction, reference


def monai_one_hot(labels: np.ndarray):
    import torch

    return torch.from_numpy(np.stack([np.isin(labels, (1, 3)), labels > 0, labels == 3])[None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for MONAI (default: torch's own choice)")
    args = parser.parse_args()

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from monai.metrics import compute_dice, compute_hausdorff_distance

    from tumorcli.io.volume import Volume
    from tumorcli.metrics.evaluation import evaluate_case
    from tumorcli.metrics.regions import parse_labels

    shape, spacing = SIZES[args.size]
    affine = np.diag([*spacing, 1.0])
    scheme = parse_labels()
    ours_seconds, monai_seconds, dice_gap, hd95_gap = [], [], 0.0, 0.0
    for seed in range(args.cases):
        prediction, reference = make_case(shape, seed)

        start = time.perf_counter()
        scores = evaluate_case(f"case{seed}", Volume(prediction, affine, source="pred"),
                               Volume(reference, affine, source="ref"), scheme)
        ours_seconds.append(time.perf_counter() - start)

        one_hot_prediction, one_hot_reference = monai_one_hot(prediction), monai_one_hot(reference)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dice = compute_dice(one_hot_prediction, one_hot_reference, include_background=True)
            hd95 = compute_hausdorff_distance(one_hot_prediction, one_hot_reference,
                                              include_background=True, percentile=95,
                                              spacing=list(spacing))
        monai_seconds.append(time.perf_counter() - start)

        dice_gap = max(dice_gap, float(np.abs(np.array([s.dice for s in scores]) -
                                              dice.numpy()[0]).max()))
        hd95_gap = max(hd95_gap, float(np.abs(np.array([s.hd95_mm for s in scores]) -
                                              hd95.numpy()[0]).max()))

    ours, monai = np.mean(ours_seconds), np.mean(monai_seconds)
    grid = "×".join(map(str, shape))
    voxel = "×".join(f"{s:g}" for s in spacing)
    print(f"{args.cases} cases of {grid} voxels ({voxel} mm), TC/WT/ET Dice + HD95, "
          f"torch threads {torch.get_num_threads()}")
    print(f"tumorcli  {ours:7.3f} s per case (median {np.median(ours_seconds):.3f})")
    print(f"MONAI     {monai:7.3f} s per case (median {np.median(monai_seconds):.3f})")
    print(f"tumorcli is {monai / ours:.1f}x faster; largest differences: Dice {dice_gap:.2e}, "
          f"HD95 {hd95_gap:.2e} mm")


if __name__ == "__main__":
    main()
