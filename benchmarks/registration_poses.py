"""Rigid co-registration (modality -> T1c) from hard poses, against the true transforms.

    python benchmarks/registration_poses.py                 # 2 mm, 24 poses, ~1 min on 2 cores
    python benchmarks/registration_poses.py --single-start  # the old single-start search

One synthetic head (skull on) is scanned as a T1c on the 2 mm atlas grid and, per pose, as a
T2w/FLAIR/T1n series rotated up to ±20° per axis, shifted up to ±30 mm, with 1–6 mm slices and
some slabs covering 60 % of the head. Prints per pose the error (mm, mean and max over brain
voxels), the quality gate's figures, and the mean/max over the grid and seconds per case.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tumorcli.preprocess import alignment, quality, spatial
from tumorcli.synth.grid import output_grid
from tumorcli.synth.heads import synthetic_head
from tumorcli.synth.native import pose_cases, posed_scan



def head(seed: int = 1, size: str = "small") -> dict:
    """The subject's clean images on the atlas grid, its brain and its scanned T1c."""
    head = synthetic_head(seed, output_grid(size), size)
    return {"grid": head.grid, "clean": head.clean, "white": head.white, "t1c": head.t1c,
            "brain": quality.points_of(head.brain, head.grid.affine, step=2)}


def scan(subject: dict, case: dict, pixel_mm: float, seed: int):
    """(moving sitk image, native_to_atlas) of one case."""
    rng = np.random.default_rng([seed, 11, int(abs(case["pose"][0]) * 1000)])
    volume, native_to_atlas = posed_scan(
        subject["clean"][case["modality"]], subject["grid"], case["pose"], case["slice_mm"],
        pixel_mm, subject["white"][case["modality"]], rng, case["slab"], case["slab_centre_mm"])
    return spatial.volume_to_sitk(volume.reoriented("RAS")), native_to_atlas


def errors_mm(estimated_t1c_to_native: np.ndarray, native_to_atlas: np.ndarray,
              brain_points: np.ndarray) -> tuple[float, float]:
    """Mean and max distance (mm) between where we and the truth put T1c brain points."""
    truth = quality.apply(np.linalg.inv(native_to_atlas), brain_points)
    ours = quality.apply(estimated_t1c_to_native, brain_points)
    distance = np.linalg.norm(ours - truth, axis=1)
    return float(distance.mean()), float(distance.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=24)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--pixel", type=float, default=2.0, help="in-plane mm of the moving scan")
    parser.add_argument("--single-start", action="store_true", help="the old search")
    args = parser.parse_args()
    subject = head()
    fixed = spatial.to_sitk(subject["t1c"], subject["grid"].affine)
    means, maxima, seconds = [], [], []
    for case in pose_cases(args.poses, args.seed):
        moving, native_to_atlas = scan(subject, case, args.pixel, args.seed)
        began = time.perf_counter()
        if args.single_start:
            transform = spatial.coregister(fixed, moving)
            gate = alignment.assess(fixed, moving, transform)
        else:
            transform, gate = alignment.register_rigid(fixed, moving)
        seconds.append(time.perf_counter() - began)
        mean, largest = errors_mm(spatial.ras_matrix(transform), native_to_atlas,
                                  subject["brain"])
        means.append(mean)
        maxima.append(largest)
        pose = " ".join(f"{v:+5.1f}" for v in case["pose"])
        print(f"{case['modality']} pose {pose} slice {case['slice_mm']:g} mm slab "
              f"{case['slab']:.0%}: error {mean:5.2f} / {largest:5.2f} mm, {gate.summary()}, "
              f"{seconds[-1]:.1f} s")
    print(f"over {len(means)} poses: mean error {np.mean(means):.2f} mm (worst case mean "
          f"{np.max(means):.2f}), max {np.max(maxima):.2f} mm; {np.mean(seconds):.2f} s per case")


if __name__ == "__main__":
    main()
