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
scanner gain differs between sessions and no model can predict it); the class effect: in the
patients whose true follow-up has ≥ 1 cm³ of enhancing tumour (regrowth), the mean brain
z-score of the prediction inside that enhancing tumour with the short class minus with the long
class (> 0: "short" predicts the regrowth brighter), next to the true follow-up's and the pre
scan's z-score there; slice coherence (mean |slice k+1 − slice k| in the brain, prediction over
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


def brain_z(volume: np.ndarray) -> np.ndarray:
    """volume z-scored over its non-zero (brain) voxels."""
    brain = volume > 0
    return (volume - volume[brain].mean()) / volume[brain].std()


def followup_enhancing(post_seg: Path) -> np.ndarray | None:
    """The true follow-up's enhancing tumour (label 3) when it holds at least 1 cm³, else None."""
    from tumorcli.io.volume import load_volume

    volume = load_volume(post_seg)
    enhancing = np.asarray(volume.array) == 3
    return enhancing if enhancing.sum() * volume.voxel_volume_mm3 >= 1000 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="predict-post")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--ddim-patients", type=int, default=None,
                        help="run the slow DDIM-200 on the first N patients only (default: all; "
                        "0 = none)")
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
    predictor = PostPredictor.load(folder, resolve_device(args.device))
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
    regrowth_z = {"truth": [], "pre": []}
    for index, pair in enumerate(pairs):
        pre, mask, post = (load_volume(p) for p in (pair.pre_t1c, pair.pre_seg, pair.post_t1c))
        brain = np.asarray(post.array) > 0
        truth = np.asarray(post.array, np.float32)
        pre_image = np.asarray(pre.array, np.float32)
        scores["identity (post = pre)"].append(scored(pre_image, truth, brain))
        predicted = {}
        for name, run in runs.items():
            if run["steps"] == 200 and args.ddim_patients is not None and \
                    index >= args.ddim_patients:
                continue
            survival = flip[pair.survival] if run.get("flipped") else pair.survival
            began = time.perf_counter()
            result = predictor.predict(pre, mask, survival, steps=run["steps"],
                                       sampler=run["sampler"])
            if name.startswith("true class, DPM"):
                seconds.append(time.perf_counter() - began)
            predicted[survival if name != "true class, DDIM 200" else "ddim"] = result.mean.array
            scores[name].append(scored(result.mean.array, truth, brain))
        regrowth = followup_enhancing(pair.post_seg)
        if regrowth is not None:
            short, long = (brain_z(predicted[c])[regrowth].mean() for c in ("short", "long"))
            class_effect.append(short - long)
            regrowth_z["truth"].append(brain_z(truth)[regrowth].mean())
            regrowth_z["pre"].append(brain_z(pre_image)[regrowth].mean())
        independent = predictor.predict(pre, mask, pair.survival, shared_noise=False).mean.array
        base = slice_roughness(truth, brain)
        roughness["shared"].append(slice_roughness(predicted[pair.survival], brain) / base)
        roughness["independent"].append(slice_roughness(independent, brain) / base)
        print(f"{pair.name}: {pair.survival}, {seconds[-1]:.1f} s", flush=True)

    lines = [f"{len(pairs)} held-out patients, model {folder}, device {predictor.device}", "",
             "| run | n | PSNR dB, normalised | SSIM, normalised | PSNR dB, raw | SSIM, raw |",
             "|---|---|---|---|---|---|"]
    for name, values in scores.items():
        if not values:   # DDIM-200 with --ddim-patients 0
            continue
        raw_p, raw_s, p, s = np.array(values).T
        lines.append(f"| {name} | {len(values)} | {_spread(p, 2)} | {_spread(s, 3)} | "
                     f"{_spread(raw_p, 2)} | {_spread(raw_s, 3)} |")
    effect = np.array(class_effect)
    lines += ["", f"Class effect in the {len(effect)} patients with ≥ 1 cm³ of enhancing "
              "regrowth at follow-up (prediction's brain z-score inside it, short − long "
              f"class): {_spread(effect, 2)}, positive in {int((effect > 0).sum())}/{len(effect)}; "
              f"there the true follow-up has z {_spread(np.array(regrowth_z['truth']), 2)} and "
              f"the pre scan z {_spread(np.array(regrowth_z['pre']), 2)}.",
              f"Slice roughness / truth's: shared noise {np.mean(roughness['shared']):.3f}, "
              f"independent noise per slice {np.mean(roughness['independent']):.3f}.",
              f"Seconds per volume (DPM-Solver++ 20 steps, guidance 2): {np.mean(seconds):.1f}."]
    print("\n" + "\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


def _spread(values: np.ndarray, digits: int) -> str:
    """mean ± sample sd (no sd for one value)"""
    if len(values) == 0:
        return "–"
    sd = f"{values.std(ddof=1):.{digits}f}" if len(values) > 1 else "–"
    return f"{values.mean():.{digits}f} ± {sd}"


if __name__ == "__main__":
    main()
