"""predict-post sampling speed: our samplers against MONAI's schedulers, on the same denoiser.

One volume = `--slices` axial slices of the model's latent size. Every run samples the post
latents of all slices with classifier-free guidance (conditional and unconditional pass in one
batch). The peer is MONAI's DDPMScheduler (1000 steps) and DDIMScheduler (50 steps) driven by
the guidance loop of MONAI's classifier-free guidance tutorial (DiffusionInferer.sample has no
class-label guidance); ours is `PostPredictor.sample_latents` with DDIM-50 and DPM-Solver++-20,
in float32 and, on CUDA, in bfloat16. The autoencoder's encode + decode of the volume is timed
apart (every row pays it once). Median of `--repeats` timed runs after one warm-up run;
MONAI DDPM-1000 runs last, on a warm net, without a warm-up run (one timed run on the CPU).
Ratios: MONAI's seconds over ours.

With no trained model (`--model` missing) the nets are built from the default config with
random weights: timing does not depend on the weights.

Run: python benchmarks/diffusion_speed.py [--model models/predict-post] [--slices 8]
     [--device auto] [--repeats 3] [--batch 0] [--markdown table.md]
CPU: small volumes (default 8 slices). GPU: --slices 128 (the issue's figure: MONAI DDPM-1000
+ CFG ≈ 79 s and DDIM-50 ≈ 3.9 s per 128-slice volume on an H100; goal ≤ 0.3 s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/predict-post"))
    parser.add_argument("--slices", type=int, default=0, help="0 = 8 on the CPU, 128 on CUDA")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=0, help="slices per denoiser call for our "
                        "runs (0 = the whole volume)")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    from tumorcli.runtime import resolve_device

    device = resolve_device(args.device)
    slices = args.slices or (128 if device.type == "cuda" else 8)
    predictor, origin = load_or_build(args.model, device)
    config = predictor.config
    generator = torch.Generator().manual_seed(0)
    image_side = [96 // config.pad_multiple * config.pad_multiple,
                  112 // config.pad_multiple * config.pad_multiple]
    images = torch.randn(slices, 1, *image_side, generator=generator).to(device)
    with torch.no_grad():
        latents = predictor.autoencoder.encode(images)[0]
    mask = torch.rand(slices, 1, *latents.shape[-2:], generator=generator).round().to(device)
    condition = torch.cat([latents, mask], 1)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    label, batch = 1, args.batch or slices
    print(f"{origin}; device {device}; {slices} slices of {image_side[0]}×{image_side[1]} "
          f"(latents {tuple(latents.shape[1:])}); guidance {args.guidance}", flush=True)

    def ours(sampler: str, steps: int, autocast: bool):
        def run():
            predictor.autocast = autocast
            return predictor.sample_latents(noise, condition, label, guidance=args.guidance,
                                            steps=steps, sampler=sampler, batch=batch)
        return run

    def codec():
        return predictor.autoencoder.decode(predictor.autoencoder.encode(images)[0])

    rows = [("autoencoder encode + decode", codec, args.repeats, True),
            ("MONAI DDIM-50", monai_loop(predictor, "ddim", 50, noise, condition, label,
                                         args.guidance), args.repeats, True),
            ("ours DDIM-50, float32", ours("ddim", 50, False), args.repeats, True),
            ("ours DPM-Solver++-20, float32", ours("dpmpp", 20, False), args.repeats, True),
            # the net is warm by now; 1000 steps are slow, so one timed run on the CPU
            ("MONAI DDPM-1000", monai_loop(predictor, "ddpm", 1000, noise, condition, label,
                                           args.guidance), 1 if device.type == "cpu" else 2,
             False)]
    if device.type == "cuda":
        rows += [("ours DDIM-50, bfloat16", ours("ddim", 50, True), args.repeats, True),
                 ("ours DPM-Solver++-20, bfloat16", ours("dpmpp", 20, True), args.repeats,
                  True)]
    seconds, outputs = {}, {}
    for name, run, repeats, warm_up in rows:
        seconds[name], outputs[name] = timed(run, repeats, device, warm_up)
        print(f"  {name}: {seconds[name]:.3f} s", flush=True)

    reference = outputs["ours DPM-Solver++-20, float32"]
    lines = ["| sampler | s / volume | MONAI DDPM-1000 / this | MONAI DDIM-50 / this | "
             "‖x − ours DPM++ fp32‖ / ‖·‖ |", "|---|---|---|---|---|"]
    for name, *_ in rows:
        if name == "autoencoder encode + decode":
            lines.append(f"| {name} | {seconds[name]:.3f} | | | |")
            continue
        difference = float((outputs[name].float() - reference).norm() / reference.norm())
        lines.append(f"| {name} | {seconds[name]:.3f} | "
                     f"{seconds['MONAI DDPM-1000'] / seconds[name]:.1f}× | "
                     f"{seconds['MONAI DDIM-50'] / seconds[name]:.2f}× | {difference:.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(f"{origin}; device {device}; {slices} slices\n\n{table}\n")


def load_or_build(folder: Path, device: torch.device):
    from tumorcli.infer.predict_post import PostPredictor
    from tumorcli.nets.latent_diffusion import (PostModelConfig, build_autoencoder,
                                                build_denoiser)

    if (folder / "config.json").exists():
        return PostPredictor.load(folder, device), f"model {folder}"
    torch.manual_seed(0)
    config = PostModelConfig()
    return (PostPredictor(config, build_autoencoder(config.autoencoder), build_denoiser(config),
                          device), "default config, random weights (no model at "
            f"{folder})")


def monai_loop(predictor, kind: str, steps: int, noise, condition, label: int, guidance: float):
    """MONAI's scheduler in the tutorial's classifier-free guidance loop, on our denoiser."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    config = predictor.config
    options = dict(num_train_timesteps=config.train_steps, clip_sample=False,
                   prediction_type=config.prediction,
                   schedule=f"{config.schedule}_beta" if config.schedule != "cosine"
                   else "cosine")
    scheduler = DDPMScheduler(**options) if kind == "ddpm" else DDIMScheduler(**options)
    scheduler.set_timesteps(steps, device=noise.device)
    labels = torch.tensor([0] * len(noise) + [label] * len(noise), device=noise.device)

    def run():
        x = noise.clone()
        generator = torch.Generator(device=noise.device).manual_seed(0)
        for t in scheduler.timesteps:
            both = predictor.denoiser(torch.cat([torch.cat([x, x]), torch.cat([condition] * 2)],
                                                1),
                                      timesteps=torch.full((2 * len(x),), int(t),
                                                           device=x.device),
                                      class_labels=labels)
            unconditional, conditional = both.chunk(2)
            output = unconditional + guidance * (conditional - unconditional)
            x, _ = (scheduler.step(output, t, x, generator=generator) if kind == "ddpm"
                    else scheduler.step(output, t, x))
        return x
    return run


@torch.no_grad()
def timed(run, repeats: int, device: torch.device, warm_up: bool):
    """Median seconds of `repeats` runs (after one untimed run if warm_up), and the last run's
    output."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    if warm_up:
        run()
        sync()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        output = run()
        sync()
        times.append(time.perf_counter() - began)
    return statistics.median(times), output


if __name__ == "__main__":
    main()
