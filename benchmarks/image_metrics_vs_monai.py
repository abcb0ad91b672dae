"""`tumor evaluate-image`'s PSNR and SSIM against MONAI on the same synthetic volumes, same run.

Each volume is a smooth head-like image (ellipsoid "brain" with texture on a zero background,
intensities ~100–1000 like a raw T1c) and a prediction that adds smooth noise and a bias.

- ours:  `psnr` + `ssim` (3D windows, whole image) from the two numpy arrays.
- MONAI: `PSNRMetric` + `SSIMMetric(spatial_dims=3)` on (1, 1, X, Y, Z) tensors built beforehand
  (their construction is not timed, which favours MONAI). Same data range on both sides.
Also timed: `image_scores` (all eight evaluate-image scores: 3D and slice-wise, whole and brain).
Printed: the speed ratio and the largest PSNR and SSIM differences between the two. (MONAI forms
E[x²] − E[x]² in float32; on images with a large offset against their range, e.g. intensities
near 800 with a range of 160, that alone costs it ~1e-3 of SSIM. Ours shifts the images by the
reference's mid-range first.)

Run: python benchmarks/image_metrics_vs_monai.py -n 3   (--torch-threads 1 when other work
shares the CPU)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SHAPE = (240, 240, 155)


def make_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) float32 volumes of SHAPE."""
    from scipy.ndimage import gaussian_filter, zoom

    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    radii = (85, 100, 70)
    inside = sum(((g - n / 2) / r) ** 2 for g, n, r in zip(grid, SHAPE, radii)) <= 1
    coarse = gaussian_filter(rng.standard_normal(tuple(n // 4 for n in SHAPE)), 1.5)
    texture = zoom(coarse, [n / c for n, c in zip(SHAPE, coarse.shape)], order=1)
    reference = np.where(inside, 550 + 250 * texture / texture.std(), 0).clip(0, None)
    noise = gaussian_filter(rng.standard_normal(SHAPE), 1.0)
    prediction = np.where(inside, reference * 1.02 + 15 * noise / noise.std(), 0)
    return prediction.astype(np.float32), reference.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--volumes", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for MONAI (default: torch's own choice)")
    args = parser.parse_args()

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from monai.metrics import PSNRMetric, SSIMMetric

    from tumorcli.metrics.image import image_scores, psnr, ssim

    ours_seconds, all_seconds, monai_seconds = [], [], []
    psnr_gap = ssim_gap = 0.0
    for seed in range(args.volumes):
        prediction, reference = make_pair(seed)
        data_range = float(reference.max() - reference.min())

        start = time.perf_counter()
        ours = (psnr(prediction, reference, data_range=data_range),
                ssim(prediction, reference, data_range=data_range))
        ours_seconds.append(time.perf_counter() - start)

        start = time.perf_counter()
        image_scores(prediction, reference, reference != 0)
        all_seconds.append(time.perf_counter() - start)

        batch_prediction = torch.from_numpy(prediction)[None, None]  # (B, C, X, Y, Z)
        batch_reference = torch.from_numpy(reference)[None, None]
        start = time.perf_counter()
        theirs = (PSNRMetric(max_val=data_range)(batch_prediction, batch_reference).item(),
                  SSIMMetric(spatial_dims=3, data_range=data_range)(
                      batch_prediction, batch_reference).item())
        monai_seconds.append(time.perf_counter() - start)

        psnr_gap = max(psnr_gap, abs(ours[0] - theirs[0]))
        ssim_gap = max(ssim_gap, abs(ours[1] - theirs[1]))
        print(f"volume {seed}: PSNR {ours[0]:.4f} / {theirs[0]:.4f} dB, "
              f"SSIM {ours[1]:.6f} / {theirs[1]:.6f} (ours / MONAI)")

    ours, every, monai = np.mean(ours_seconds), np.mean(all_seconds), np.mean(monai_seconds)
    print(f"{args.volumes} volumes of {'×'.join(map(str, SHAPE))} voxels, 3D PSNR + "
          f"SSIM, torch threads {torch.get_num_threads()}")
    print(f"tumorcli  {ours:7.3f} s per volume (all eight evaluate-image scores: {every:.3f} s)")
    print(f"MONAI     {monai:7.3f} s per volume")
    print(f"tumorcli is {monai / ours:.1f}x faster; largest differences: PSNR {psnr_gap:.2e} dB, "
          f"SSIM {ssim_gap:.2e}")


if __name__ == "__main__":
    main()
