"""`tumor predict-post`: the post-treatment T1c predicted from the pre-treatment T1c, the tumour
mask and the survival class (latent diffusion with classifier-free guidance), for one patient
or, with --cohort, for the pre-treatment session of every patient of a cohort."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Device, Json, Quiet, Seed, console, finish, start
from tumorcli.cli.sharding import shard_option

NIFTI = (".nii", ".nii.gz")
POST_SUFFIX = "-post-t1c.nii.gz"   # OUT/<case>-post-t1c.nii.gz, its record <case>-post-t1c.json
SURVIVAL_TABLE = "cohort.csv"      # the table `tumor synth-cohort` writes at the cohort's root
PatientShard = shard_option("the cohort's patients (their pre sessions) sorted by case id")


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
    output: Annotated[Path, typer.Option("-o", "--output", help="Predicted post T1c .nii.gz; "
                                         "with --cohort a folder (<case>-post-t1c.nii.gz "
                                         "each).")],
    pre: Annotated[Optional[Path], typer.Option(
        "--pre", help="Pre-treatment T1c: NIfTI or DICOM folder (skull-stripped, as after "
        "tumor preprocess).", show_default=False)] = None,
    mask: Annotated[Optional[Path], typer.Option(
        "--mask", help="Tumour mask on the same grid: BraTS labels or binary (NIfTI or DICOM "
        "SEG folder).", show_default=False)] = None,
    survival: Annotated[Optional[Survival], typer.Option(
        "--survival", help="Survival class to condition on (none = unconditional); with "
        "--cohort the same class for every patient instead of the table's.",
        show_default=False)] = None,
    cohort: Annotated[Optional[Path], typer.Option(
        "--cohort", help="A cohort folder (BraTS case folders <patient>-<session>): predict "
        "from the first session of each patient, its t1c and mask.", show_default=False)
        ] = None,
    seg_dir: Annotated[Optional[Path], typer.Option(
        "--seg-dir", help="--cohort: the masks, <case>-seg.nii.gz or <case>.nii.gz (as tumor "
        "segment writes them; default: each case's own *-seg.nii.gz).", show_default=False)
        ] = None,
    survival_table: Annotated[Optional[Path], typer.Option(
        "--survival-table", help="--cohort: a csv with columns subject (patient or case id) "
        "and survival_class (default: the cohort's cohort.csv).", show_default=False)] = None,
    shard: PatientShard = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="--cohort: redo cases whose prediction exists (without it, ones "
        "made from the same inputs, model and options are skipped, others are that case's "
        "error).")] = False,
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
    """Predict the post-treatment T1c of a patient, or of every patient in a cohort.

    Every axial slice is translated in the latent space of the shipped autoencoder; one noise
    map is shared by all slices of a sample so the volume stays coherent. The output is the
    model's conditional-mean estimate (default) or the mean of sampled follow-ups, on the pre
    scan's grid and intensity scale; away from the tumour the pre scan's own fine detail is
    added back (--no-detail: the model's output everywhere).

    --cohort DIR: the pre-treatment session of each patient is its first case folder by name
    (BraTS-GLI-00001-000 of -000, -001, …; a folder without a session suffix is a patient of
    its own); any folder holding a t1c image counts. Its mask comes from --seg-dir or the case
    folder, its class from --survival or the table (DIR/cohort.csv by default), and the
    prediction goes to OUT/<case>-post-t1c.nii.gz with its record <case>-post-t1c.json. The
    model is loaded once; a case predicted from the same inputs, model and options is skipped,
    so a rerun resumes; a failing case does not stop the others (exit code 3); OUT/logs/<case>.log
    gets a line per outcome.

    Examples:
      tumor predict-post --pre t1c.nii.gz --mask seg.nii.gz --survival short -o post.nii.gz
      tumor predict-post --pre t1c.nii.gz --mask seg.nii.gz --survival long -o post.nii.gz \\
          --method samples --samples 4 --uncertainty sd.nii.gz --sampler ddim --steps 50
      tumor predict-post --cohort cohort -o posts --seg-dir segs --shard auto   (sbatch --array)
      tumor predict-post --cohort cohort -o posts --survival short --shard 2/4
    """
    start(quiet, as_json)
    import time

    from tumorcli.errors import BadInput

    if cohort is None:
        _check_one_patient(pre, mask, survival, seg_dir, survival_table, shard, overwrite)
    else:
        _check_cohort(cohort, pre, mask, output, uncertainty, seg_dir, survival, survival_table,
                      shard)
    for path, option in ((pre, "--pre"), (mask, "--mask")):
        if path is not None and not path.exists():
            raise BadInput(f"{path}: {option} not found", "check the path")
    for path, option in ((None if cohort else output, "-o"), (uncertainty, "--uncertainty")):
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

    from tumorcli.cli.sharding import take_shard
    from tumorcli.infer.predict_post import (DEFAULT_SAMPLES, DEFAULT_STEPS, POSTERIOR_MEAN,
                                             PostPredictor)
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.io.volume import save_volume
    from tumorcli.preprocess.inputs import read_scan
    from tumorcli.progress import task
    from tumorcli.runtime import resolve_device, seed_everything

    seed_everything(seed)
    if cohort is not None:
        from tumorcli.cli.predict_post_cohort import pre_sessions, predict_cohort

        sessions = take_shard(pre_sessions(cohort, output), shard)
    model_folder = find_model_folder(model)
    predictor = PostPredictor.load(model_folder, resolve_device(device))
    how = (POSTERIOR_MEAN if method is Method.mean else
           {"steps": steps or DEFAULT_STEPS, "sampler": (sampler or SamplerName.dpmpp).value,
            "samples": samples or DEFAULT_SAMPLES})
    if cohort is not None:
        from tumorcli.cli.batch import model_digest

        options = {"model": model_digest(model_folder), "method": method.value,
                   "guidance": guidance, **how, "detail": detail, "seed": seed}
        return predict_cohort(predictor, sessions, output, seg_dir,
                              None if survival is None else survival.value,
                              survival_table or cohort / SURVIVAL_TABLE, options, overwrite,
                              quiet, as_json)
    pre_volume = read_scan(pre, "t1c")
    mask_volume = read_mask(mask, pre)
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


def read_mask(mask: Path, pre: Path):
    """A NIfTI mask, or a DICOM SEG file referencing the pre series."""
    if mask.is_file() and not mask.name.lower().endswith(NIFTI):
        from tumorcli.io.dicom_seg import read_dicom_seg

        return read_dicom_seg(mask, pre)
    from tumorcli.io.volume import load_volume

    return load_volume(mask)


def _check_one_patient(pre, mask, survival, seg_dir, survival_table, shard, overwrite) -> None:
    """BadInput unless --pre, --mask and --survival are given, and none of --cohort's options."""
    from tumorcli.errors import BadInput

    for value, option in ((pre, "--pre"), (mask, "--mask"), (survival, "--survival")):
        if value is None:
            raise BadInput(f"{option} is missing", "give --pre T1C --mask SEG --survival "
                           "short|long|none, or --cohort DIR for a cohort")
    given = [option for option, value in (("--seg-dir", seg_dir), ("--survival-table",
                                                                   survival_table),
                                          ("--shard", shard), ("--overwrite", overwrite))
             if value not in (None, False)]
    if given:
        raise BadInput(f"{given[0]} applies to --cohort", "e.g. tumor predict-post --cohort "
                       f"DIR -o OUT {given[0]} ...")


def _check_cohort(cohort: Path, pre, mask, output: Path, uncertainty, seg_dir, survival,
                  survival_table, shard) -> None:
    """BadInput for --cohort with one patient's options, a file or the cohort itself as -o, no
    survival class to be had (no --survival, no table), or a bad --shard."""
    from tumorcli.cli.sharding import check_shard
    from tumorcli.errors import BadInput

    check_shard(shard)
    given = [option for option, value in (("--pre", pre), ("--mask", mask),
                                          ("--uncertainty", uncertainty)) if value is not None]
    if given:
        raise BadInput(f"{given[0]} is for one patient, not with --cohort",
                       "give either --pre/--mask or --cohort")
    for path, option in ((cohort, "--cohort"), (seg_dir, "--seg-dir")):
        if path is not None and not path.is_dir():
            raise BadInput(f"{path}: {option} is not a folder", "check the path")
    if output.name.lower().endswith(NIFTI) or (output.exists() and not output.is_dir()):
        raise BadInput(f"{output}: -o must be a folder with --cohort", "e.g. -o posts")
    if output.resolve() == cohort.resolve():
        # predictions beside the case folders would read as a second cohort's t1c images
        raise BadInput(f"{output}: -o is the cohort itself", "write the predictions to a "
                       "folder of their own, e.g. -o posts")
    if survival is not None and survival_table is not None:
        raise BadInput("--survival and --survival-table: give one", "--survival gives every "
                       "patient one class, the table each their own")
    table = survival_table or cohort / SURVIVAL_TABLE
    if survival is None and not table.is_file():
        raise BadInput(f"{table}: not found, so no survival class for the patients",
                       "give --survival short|long|none, or --survival-table CSV")
