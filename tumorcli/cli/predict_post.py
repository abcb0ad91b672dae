"""`tumor predict-post`: the post-treatment T1c predicted from the pre-treatment T1c, the tumour
mask and the survival class (latent diffusion with classifier-free guidance)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Device, Json, Quiet, Seed, console, finish, start

NIFTI = (".nii", ".nii.gz")


class Survival(str, Enum):
    short = "short"
    long = "long"
    none = "none"


class Method(str, Enum):
    mean = "mean"
    samples = "samples"


class SamplerName(str, Enum):
    dpmpp = "dpmpp"
    ddim = "ddim"
    ddpm = "ddpm"


def predict_post(
    pre: Annotated[Path, typer.Option("--pre", help="Pre-treatment T1c: NIfTI or DICOM folder "
                                      "(skull-stripped, as after tumor preprocess).")],
    mask: Annotated[Path, typer.Option("--mask", help="Tumour mask on the same grid: BraTS "
                                       "labels or binary (NIfTI or DICOM SEG folder).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Predicted post T1c .nii.gz.")],
    survival: Annotated[Survival, typer.Option(
        "--survival", help="Survival class to condition on (none = unconditional).")],
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance weight "
                                            "(1 = plain conditional).")] = 2.0,
    method: Annotated[Method, typer.Option(
        "--method", help="mean: the model's estimate of the conditional mean E[post | pre, "
        "mask, class] (its clean-latent prediction from pure noise: one guided denoiser "
        "call; the best PSNR/SSIM and the fastest). samples: the mean of --samples sampled "
        "follow-ups (sharper texture, slower; gives --uncertainty).")] = Method.mean,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", help="Sampler steps (--method samples; default 20).",
        show_default=False)] = None,
    sampler: Annotated[Optional[SamplerName], typer.Option(
        "--sampler", help="--method samples; default dpmpp.", show_default=False)] = None,
    samples: Annotated[Optional[int], typer.Option(
        "--samples", help="Samples drawn in one batch and averaged (--method samples; "
        "default 4); ≥ 2 allows --uncertainty.", show_default=False)] = None,
    detail: Annotated[bool, typer.Option("--detail/--no-detail", help="Add the pre scan's own "
                                         "fine detail back away from the tumour (beyond the "
                                         "model's margin).")] = True,
    uncertainty: Annotated[Optional[Path], typer.Option(
        "--uncertainty", help="Voxel-wise sd over the samples (.nii.gz; needs --samples ≥ 2).",
        show_default=False)] = None,
    model: Annotated[str, typer.Option("--model", help="Model name or folder.")] = "predict-post",
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Predict the post-treatment T1c of a patient.

    Every axial slice is translated in the latent space of the shipped autoencoder; one noise
    map is shared by all slices of a sample so the volume stays coherent. The output is the
    model's conditional-mean estimate (default) or the mean of sampled follow-ups, on the pre
    scan's grid and intensity scale; away from the tumour the pre scan's own fine detail is
    added back (--no-detail: the model's output everywhere).

    Examples:
      tumor predict-post --pre t1c.nii.gz --mask seg.nii.gz --survival short -o post.nii.gz
      tumor predict-post --pre t1c.nii.gz --mask seg.nii.gz --survival long -o post.nii.gz \\
          --method samples --samples 4 --uncertainty sd.nii.gz --sampler ddim --steps 50
    """
    start(quiet, as_json)
    import time

    from tumorcli.errors import BadInput

    for path, option in ((pre, "--pre"), (mask, "--mask")):
        if not path.exists():
            raise BadInput(f"{path}: {option} not found", "check the path")
    for path, option in ((output, "-o"), (uncertainty, "--uncertainty")):
        if path is not None and not path.name.lower().endswith(NIFTI):
            raise BadInput(f"{path}: {option} must be a .nii.gz file", "e.g. -o post.nii.gz")
    if method is Method.mean:
        given = [name for name, value in (("--steps", steps), ("--sampler", sampler),
                                          ("--samples", samples), ("--uncertainty",
                                                                   uncertainty))
                 if value is not None]
        if given:
            raise BadInput(f"{given[0]} applies to --method samples, not to the conditional "
                           "mean", f"add --method samples to use {given[0]}")
    # None: the predictor's default (DEFAULT_STEPS, DEFAULT_SAMPLES ≥ 2, dpmpp)
    if steps is not None and not 1 <= steps <= 1000:
        raise BadInput(f"--steps {steps}: outside 1–1000", "e.g. --steps 20")
    if samples is not None and (samples < 1 or (uncertainty is not None and samples < 2)):
        raise BadInput(f"--samples {samples}: needs ≥ 1, and ≥ 2 with --uncertainty",
                       "e.g. --samples 4 --uncertainty sd.nii.gz")
    if guidance < 0:
        raise BadInput(f"--guidance {guidance}: must be ≥ 0", "e.g. --guidance 2")

    from tumorcli.infer.predict_post import (DEFAULT_SAMPLES, DEFAULT_STEPS, POSTERIOR_MEAN,
                                             PostPredictor)
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.io.volume import save_volume
    from tumorcli.preprocess.inputs import read_scan
    from tumorcli.progress import task
    from tumorcli.runtime import resolve_device, seed_everything

    seed_everything(seed)
    predictor = PostPredictor.load(find_model_folder(model), resolve_device(device))
    pre_volume = read_scan(pre, "t1c")
    mask_volume = _read_mask(mask, pre)
    how = (POSTERIOR_MEAN if method is Method.mean else
           {"steps": steps or DEFAULT_STEPS, "sampler": (sampler or SamplerName.dpmpp).value,
            "samples": samples or DEFAULT_SAMPLES})
    began = time.perf_counter()
    with task("Predicting", total=how["steps"]) as advance:
        result = predictor.predict(pre_volume, mask_volume, survival.value, guidance=guidance,
                                   seed=seed, detail=detail, advance=advance, **how)
    seconds = time.perf_counter() - began
    save_volume(result.mean, output)
    if uncertainty is not None:
        save_volume(result.std, uncertainty)
    finish({"output": str(output), "uncertainty": str(uncertainty) if uncertainty else None,
            "survival": survival.value, "method": method.value, "guidance": guidance,
            **how, "detail": detail, "seed": seed, "seconds": round(seconds, 2)},
           as_json=as_json, quiet=quiet,
           human=lambda r: console().print(
               f"[green]wrote[/] {r['output']} (" + ("conditional mean" if r["method"] == "mean"
                                                     else f"mean of {r['samples']} samples, "
                                                     f"{r['sampler']} × {r['steps']} steps")
               + f", {r['seconds']} s)"))


def _read_mask(mask: Path, pre: Path):
    """A NIfTI mask, or a DICOM SEG file referencing the pre series."""
    if mask.is_file() and not mask.name.lower().endswith(NIFTI):
        from tumorcli.io.dicom_seg import read_dicom_seg

        return read_dicom_seg(mask, pre)
    from tumorcli.io.volume import load_volume

    return load_volume(mask)
