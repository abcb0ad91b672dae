"""`tumor predict-post`: the post-treatment T1c predicted from the pre-treatment T1c, the tumour
mask and the survival class (latent diffusion with classifier-free guidance), for one patient
or, with --cohort, for the pre-treatment session of every patient of a cohort."""

from __future__ import annotations

from dataclasses import dataclass
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
    sessions = None if cohort is None else take_shard(pre_sessions(cohort, output), shard)
    model_folder = find_model_folder(model)
    predictor = PostPredictor.load(model_folder, resolve_device(device))
    how = (POSTERIOR_MEAN if method is Method.mean else
           {"steps": steps or DEFAULT_STEPS, "sampler": (sampler or SamplerName.dpmpp).value,
            "samples": samples or DEFAULT_SAMPLES})
    if sessions is not None:
        from tumorcli.cli.batch import model_digest

        options = {"model": model_digest(model_folder), "method": method.value,
                   "guidance": guidance, **how, "detail": detail, "seed": seed}
        return _cohort(predictor, sessions, output, seg_dir,
                       None if survival is None else survival.value,
                       survival_table or cohort / SURVIVAL_TABLE, options, overwrite, quiet,
                       as_json)
    pre_volume = read_scan(pre, "t1c")
    mask_volume = _read_mask(mask, pre)
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


@dataclass(frozen=True)
class PreSession:
    """The pre-treatment session of one patient: its case id (folder name), the folder and the
    t1c images found in it (one, unless the folder is malformed)."""

    name: str
    folder: Path
    t1c: tuple[Path, ...]


def pre_sessions(cohort: Path, output: Path | None = None) -> list[PreSession]:
    """The first session (by case id) of each patient in `cohort`, a folder of BraTS case
    folders (or one case folder); a folder counts when it holds a t1c image, except `output`
    (predictions written inside the cohort)."""
    from tumorcli.errors import BadInput
    from tumorcli.train.data import patient_of

    def t1c_images(folder: Path) -> tuple[Path, ...]:
        from tumorcli.io.volume import is_nifti_path
        from tumorcli.preprocess.inputs import modality_of

        return tuple(entry for entry in sorted(folder.iterdir())
                     if not entry.name.startswith(".") and modality_of(entry.name) == "t1c"
                     and (entry.is_dir() or is_nifti_path(entry)))

    if t1c_images(cohort):
        return [PreSession(cohort.name, cohort, t1c_images(cohort))]
    first: dict[str, PreSession] = {}
    for folder in sorted(cohort.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and not (
                output is not None and folder.resolve() == output.resolve()):
            images = t1c_images(folder)
            if images and patient_of(folder.name) not in first:
                first[patient_of(folder.name)] = PreSession(folder.name, folder, images)
    if not first:
        raise BadInput(f"{cohort}: holds no case folder with a t1c image",
                       "give --cohort a folder of BraTS case folders")
    return list(first.values())


def _cohort(predictor, sessions: list[PreSession], output: Path, seg_dir: Path | None,
            survival: str | None, table: Path, options: dict, overwrite: bool, quiet: bool,
            as_json: bool) -> None:
    """Each patient's prediction into OUT/<case>-post-t1c.nii.gz, resumable: cli/batch.py."""
    import time

    from tumorcli.cli.batch import LOGS, Batch, made_once
    from tumorcli.io.volume import save_volume
    from tumorcli.metrics.cases import masks_by_case
    from tumorcli.preprocess.inputs import read_scan, sha256_of
    from tumorcli.progress import task

    masks = masks_by_case(seg_dir, "--seg-dir") if seg_dir is not None else None
    classes = None if survival is not None else _survival_classes(table)
    output.mkdir(parents=True, exist_ok=True)
    how = {key: options[key] for key in ("steps", "sampler", "samples")}

    def predict_one(session: PreSession) -> dict:
        t1c, mask = _t1c_of(session), _mask_of(session, masks, seg_dir)
        survival_class = survival or _class_of(session.name, classes, table)
        made_from = {"inputs": {"t1c": sha256_of(t1c), "mask": sha256_of(mask)},
                     "survival": survival_class, **options}

        def make(staged: Path) -> dict:
            began = time.perf_counter()
            result = predictor.predict(read_scan(t1c, "t1c"), _read_mask(mask, t1c),
                                       survival_class, guidance=options["guidance"],
                                       seed=options["seed"], detail=options["detail"], **how)
            save_volume(result.mean, staged)
            return {"seconds": round(time.perf_counter() - began, 2)}

        made = made_once(output / f"{session.name}{POST_SUFFIX}", made_from, "predict-post",
                         make, overwrite)
        return {"subject": session.name, "survival": survival_class,
                "output": str(output / f"{session.name}{POST_SUFFIX}"), **made}

    batch = Batch("predict-post", output / LOGS, what="patients")
    with task("Predicting", total=len(sessions)) as advance:
        rows = batch.rows(sessions, predict_one, advance=advance,
                          outputs=lambda session: [output / f"{session.name}{POST_SUFFIX}"])
    if batch.errors and len(sessions) == 1:
        raise batch.errors[0]
    result = {"model": options["model"]["name"], "method": options["method"], "subjects": rows,
              "summary": batch.summary()}
    finish(result, as_json=as_json, quiet=quiet, human=lambda result: (_show(result),
                                                                       batch.show()))
    batch.raise_if_failed()


def _t1c_of(session: PreSession) -> Path:
    from tumorcli.errors import BadInput

    if len(session.t1c) > 1:
        raise BadInput(f"{session.folder}: two t1c images ({session.t1c[0].name} and "
                       f"{session.t1c[1].name})", "keep one t1c image per case folder")
    return session.t1c[0]


def _mask_of(session: PreSession, masks: dict[str, Path] | None, seg_dir: Path | None) -> Path:
    """The case's mask in --seg-dir (by case id), else its own *-seg.nii.gz."""
    from tumorcli.errors import BadInput
    from tumorcli.io.volume import is_nifti_path
    from tumorcli.metrics.cases import case_id_stem

    if masks is not None:
        if session.name not in masks:
            raise BadInput(f"{session.name}: no mask in {seg_dir}", f"expected {seg_dir}/"
                           f"{session.name}-seg.nii.gz (or {session.name}.nii.gz)")
        return masks[session.name]
    own = [path for path in sorted(session.folder.iterdir()) if is_nifti_path(path)
           and case_id_stem(path).lower().endswith(("-seg", "_seg"))]
    if len(own) != 1:
        raise BadInput(f"{session.folder}: {'no' if not own else 'more than one'} "
                       "*-seg.nii.gz mask", "segment the cohort first (tumor segment -i "
                       "COHORT -o SEGS) and pass --seg-dir SEGS")
    return own[0]


def _survival_classes(table: Path) -> dict[str, str]:
    """{subject: survival_class} from a csv with those columns (the subject a patient or case
    id, as in cohort.csv of tumor synth-cohort)."""
    import csv

    from tumorcli.errors import BadInput

    with open(table, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or not {"subject", "survival_class"} <= set(rows[0]):
        raise BadInput(f"{table}: needs the columns subject and survival_class",
                       "as written by tumor synth-cohort")
    return {row["subject"]: row["survival_class"] for row in rows}


def _class_of(case: str, classes: dict[str, str], table: Path) -> str:
    """The class of `case` (a row for the case itself, else for its patient); BadInput for
    none, or a class the model does not know."""
    from tumorcli.errors import BadInput
    from tumorcli.train.data import patient_of

    found = classes.get(case, classes.get(patient_of(case)))
    if found is None:
        raise BadInput(f"{case}: no row for {patient_of(case)} in {table}",
                       "add its survival_class, or give every patient --survival")
    if found not in {member.value for member in Survival}:
        raise BadInput(f"{case}: survival_class {found!r} in {table}: expected short, long or "
                       "none", "fix the table, or give --survival")
    return found


def _show(result: dict) -> None:
    from rich.table import Table

    table = Table("subject", "survival", "status", "seconds", "output / error",
                  title=f"Predicted with {result['model']} ({result['method']})",
                  title_justify="left")
    for row in result["subjects"]:
        table.add_row(row["subject"], row.get("survival", ""), row["status"],
                      "" if row.get("seconds") is None else f"{row['seconds']:.1f}",
                      row.get("error") or row.get("output", ""))
    console().print(table)
