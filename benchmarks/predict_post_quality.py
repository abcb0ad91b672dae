"""Quality and speed of `tumor predict-post` on held-out synthetic patients, in one run.

For each test patient of the model's split.json (pre = first session, post = the session the
model was trained to predict, `post_session` in its config: the next or the last):
  1. the model with the true survival class (DPM-Solver++, 20 steps, guidance 2)
  2. the model with the flipped class
  3. the identity baseline (post = pre)
  4. DDIM with 200 steps, true class (the quality cost of 20 steps)
PSNR / SSIM (3D, brain only: voxels where the true post scan is not 0) as mean ± sd over
patients, on raw intensities and after percentile normalisation of each image (brain
0.5–99.5th percentiles to 0–1, as `tumor evaluate-image --normalize percentile`: the simulated
scanner gain differs between sessions and no model can predict it); the class effect: the
enhancing volume of the prediction near the tumour (normalised voxels within 10 mm of the
pre-treatment tumour at least as bright as the patient's own pre-treatment enhancing tumour,
its 10th percentile), short minus long, next to the same volume in the true follow-ups of short
and long survivors; slice coherence (mean |slice k+1 − slice k| in the brain, prediction over
truth, with the noise map shared by all slices and with independent noise per slice); seconds
per volume.

Run: python benchmarks/predict_post_quality.py --data COHORT [--model predict-post]
     [--patients 12] [--device auto]
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


def enhancing_cm3(pre: np.ndarray, labels: np.ndarray, spacing: tuple[float, ...]):
    """normalised volume -> cm³ of voxels within 10 mm of the pre-treatment tumour at least as
    bright as the 10th percentile of the normalised pre scan's enhancing tumour (label 3; the
    whole tumour when it has no label 3)."""
    from scipy import ndimage

    enhancing = labels == 3 if (labels == 3).any() else labels > 0
    level = float(np.percentile(pre[enhancing], 10))
    reach = ndimage.distance_transform_edt(labels == 0, sampling=spacing) <= 10
    voxel_cm3 = float(np.prod(spacing)) / 1000
    return lambda volume: float(((volume >= level) & reach & (volume > 0)).sum() * voxel_cm3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="predict-post")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--ddim-patients", type=int, default=0,
                        help="run the slow DDIM-200 on the first N patients only (0 = all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--markdown", type=Path, help="also write the table here (model cards)")
    args = parser.parse_args()

    from tumorcli.infer.predict_post import PostPredictor
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.io.volume import load_volume
    from tumorcli.metrics.image import percentile_normalised, psnr, ssim
    from tumorcli.nets.weights import read_config
    from tumorcli.runtime import resolve_device
    from tumorcli.train.data import read_split
    from tumorcli.train.post_data import find_pairs

    folder = find_model_folder(args.model)
    predictor = PostPredictor(folder, resolve_device(args.device))
    test = set(read_split(folder)["test"])
    post = read_config(folder).get("training", {}).get("post_session", "next")
    pairs = [p for p in find_pairs(args.data, post) if p.name in test][:args.patients]
    flip = {"short": "long", "long": "short"}
    runs = {"true class, DPM++ 20": dict(steps=20, sampler="dpmpp"),
            "flipped class, DPM++ 20": dict(steps=20, sampler="dpmpp", flipped=True),
            "true class, DDIM 200": dict(steps=200, sampler="ddim")}
    scores = {name: [] for name in (*runs, "identity (post = pre)")}

    def scored(prediction, truth, brain):
        """(raw PSNR, raw SSIM, normalised PSNR, normalised SSIM)"""
        normalised = [percentile_normalised(v, brain) for v in (prediction, truth)]
        return (psnr(prediction, truth, brain), ssim(prediction, truth, brain),
                psnr(*normalised, brain, data_range=1.0), ssim(*normalised, brain, data_range=1.0))

    class_effect, seconds, roughness = [], [], {"shared": [], "independent": []}
    true_enhancing = {"short": [], "long": []}
    for index, pair in enumerate(pairs):
        pre, mask, post = (load_volume(p) for p in (pair.pre_t1c, pair.pre_seg, pair.post_t1c))
        brain = np.asarray(post.array) > 0
        truth = np.asarray(post.array, np.float32)
        pre_image = np.asarray(pre.array, np.float32)
        scores["identity (post = pre)"].append(scored(pre_image, truth, brain))
        predicted = {}
        for name, run in runs.items():
            if run["steps"] == 200 and 0 < args.ddim_patients <= index:
                continue
            survival = flip[pair.survival] if run.get("flipped") else pair.survival
            began = time.perf_counter()
            result = predictor.predict(pre, mask, survival, steps=run["steps"],
                                       sampler=run["sampler"])
            if name.startswith("true class, DPM"):
                seconds.append(time.perf_counter() - began)
            predicted[survival if name != "true class, DDIM 200" else "ddim"] = result.mean.array
            scores[name].append(scored(result.mean.array, truth, brain))
        pre_brain = pre_image > 0
        enhancing = enhancing_cm3(percentile_normalised(pre_image, pre_brain),
                                  np.asarray(mask.array), pre.spacing)
        short, long = (percentile_normalised(predicted[c], predicted[c] > 0)
                       for c in ("short", "long"))
        class_effect.append(enhancing(short) - enhancing(long))
        true_enhancing[pair.survival].append(enhancing(percentile_normalised(truth, brain)))
        independent = predictor.predict(pre, mask, pair.survival, shared_noise=False).mean.array
        base = slice_roughness(truth, brain)
        roughness["shared"].append(slice_roughness(predicted[pair.survival], brain) / base)
        roughness["independent"].append(slice_roughness(independent, brain) / base)
        print(f"{pair.name}: {pair.survival}, {seconds[-1]:.1f} s", flush=True)

    lines = [f"{len(pairs)} held-out patients, model {folder}, device {predictor.device}", "",
             "| run | n | PSNR dB, normalised | SSIM, normalised | PSNR dB, raw | SSIM, raw |",
             "|---|---|---|---|---|---|"]
    for name, values in scores.items():
        raw_p, raw_s, p, s = np.array(values).T
        lines.append(f"| {name} | {len(values)} | {_spread(p, 2)} | {_spread(s, 3)} | "
                     f"{_spread(raw_p, 2)} | {_spread(raw_s, 3)} |")
    effect = np.array(class_effect)
    truth_short, truth_long = (np.mean(true_enhancing[c] or [np.nan]) for c in ("short", "long"))
    lines += ["", "Class effect (predicted enhancing cm³ within 10 mm of the tumour, short − "
              f"long): {effect.mean():.2f} ± {effect.std(ddof=1):.2f}, positive in "
              f"{int((effect > 0).sum())}/{len(effect)} patients; true follow-ups: short "
              f"{truth_short:.2f}, long {truth_long:.2f} cm³.",
              f"Slice roughness / truth's: shared noise {np.mean(roughness['shared']):.3f}, "
              f"independent noise per slice {np.mean(roughness['independent']):.3f}.",
              f"Seconds per volume (DPM-Solver++ 20 steps, guidance 2): {np.mean(seconds):.1f}."]
    print("\n" + "\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


def _spread(values: np.ndarray, digits: int) -> str:
    """mean ± sample sd (no sd for one value)"""
    sd = f"{values.std(ddof=1):.{digits}f}" if len(values) > 1 else "–"
    return f"{values.mean():.{digits}f} ± {sd}"


if __name__ == "__main__":
    main()
