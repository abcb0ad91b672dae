"""`tumor segment`: BraTS labels (1 NETC, 2 SNFH, 3 ET) for a subject or a cohort."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import Device, Json, Quiet, Seed, console, finish, start
from tumorcli.cli.sharding import shard_option

ModalityFile = Annotated[Optional[Path], typer.Option(show_default=False)]
NIFTI = (".nii", ".nii.gz")
SubjectShard = shard_option("the cohort's subjects sorted by name")


class Target(str, Enum):
    nifti = "nifti"
    seg = "seg"


class RefineKind(str, Enum):
    medsegdiff = "medsegdiff"
    ddpm = "ddpm"


class RefineSampler(str, Enum):
    ddim = "ddim"
    dpmpp = "dpmpp"


def segment(
    input: Annotated[Optional[Path], typer.Option(
        "-i", "--input", help="Subject folder (BraTS names, t1n/t1c/t2w/t2f files or DICOM "
        "series folders) or a cohort folder of them.", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="seg.nii.gz (or seg.dcm with --to seg) for one subject; a "
        "folder for a cohort (<case>-seg.nii.gz each, inside <case>/ when -o holds that "
        "subject's folder, e.g. -o the preprocessed cohort itself).", show_default=False)
        ] = None,
    t1n: Annotated[Optional[Path], typer.Option("--t1n", help="Native T1 (NIfTI or DICOM "
                                                "folder).", show_default=False)] = None,
    t1c: Annotated[Optional[Path], typer.Option("--t1c", help="Contrast T1: the output grid.",
                                                show_default=False)] = None,
    t2w: Annotated[Optional[Path], typer.Option("--t2w", show_default=False)] = None,
    t2f: Annotated[Optional[Path], typer.Option("--t2f", help="FLAIR.", show_default=False)
                   ] = None,
    model: Annotated[str, typer.Option(
        "--model", help="resunet or swinunetr (both shipped, see models/*/card.md), a model "
        "name from `tumor info` or a model folder from `tumor train segment`.")
        ] = "resunet",
    tta: Annotated[bool, typer.Option("--tta", help="Average over the 8 axis flips (8× time).")
                   ] = False,
    postprocess: Annotated[bool, typer.Option(
        "--postprocess/--no-postprocess", help="The label rule of the model that made "
        "the labels, the segmenter's or with --refine the refiner's (its card: small far "
        "tumour components dropped, small predicted ET → NETC, small tumour core → SNFH; "
        "chosen on sessions it did not train on).")
        ] = True,
    overlap: Annotated[float, typer.Option("--overlap", help="Sliding-window overlap (0–0.9).")
                       ] = 0.5,
    probabilities: Annotated[Optional[Path], typer.Option(
        "--probabilities", help="Also write TC/WT/ET probabilities as a 4D NIfTI (one "
        "subject).", show_default=False)] = None,
    to: Annotated[Target, typer.Option(
        "--to", help="nifti, or seg: a DICOM SEG referencing the T1c series (DICOM input).")
                  ] = Target.nifti,
    refine: Annotated[Optional[RefineKind], typer.Option(
        "--refine", help="Refine the labels with a diffusion model conditioned on them.",
        show_default=False)] = None,
    refiner: Annotated[Optional[str], typer.Option(
        "--refiner", help="Refiner model name or folder (default refine-medsegdiff or "
        "refine-ddpm).", show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", help="Refinement sampler steps.")] = 10,
    start_step: Annotated[Optional[int], typer.Option(
        "--start", help="t′ (of 1000) the prior is noised to (default: the refiner's).",
        show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", help="Refinements that vote (majority "
                                         "per voxel).")] = 1,
    uncertainty: Annotated[Optional[Path], typer.Option(
        "--uncertainty", help="Entropy of the refinement vote as .nii.gz (one subject).",
        show_default=False)] = None,
    refine_sampler: Annotated[RefineSampler, typer.Option("--sampler", help="Refinement "
                                                          "sampler.")] = RefineSampler.ddim,
    unconditional: Annotated[bool, typer.Option(
        "--unconditional", help="Refine from pure noise without the prior (for comparison "
        "only).")] = False,
    shard: SubjectShard = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Redo subjects whose labels exist (without it, labels made from the "
        "same inputs, model and options are skipped, others are that subject's error).")
        ] = False,
    device: Device = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Segment glioma into BraTS labels with a Res U-Net or Swin-UNETR.

    Inputs must be co-registered and skull-stripped (BraTS data, or `tumor preprocess`
    output). The net runs at its own spacing as a sliding window with Gaussian blending; labels
    land on the T1c's grid with its affine. In a cohort (-o a folder), a subject whose labels
    were made from the same inputs, model and options (their record: <case>-seg.json beside
    them) is skipped, so a rerun resumes; a failing subject does not stop the others (exit code
    3); OUT/logs/<subject>.log gets a line per outcome.

    Examples:
      tumor segment -i BraTS-GLI-00001-000 -o seg.nii.gz
      tumor segment -i cohort -o segs --model swinunetr --shard 1/4
      tumor segment -i cohort -o segs --shard auto   (in each task of sbatch --array=1-8)
      tumor segment --t1n a.nii.gz --t1c b.nii.gz --t2w c.nii.gz --t2f d.nii.gz -o seg.nii.gz --tta
      tumor segment -i dicom/SUBJECT -o seg.dcm --to seg
      tumor segment -i SUBJECT -o seg.nii.gz --refine medsegdiff --samples 5 --uncertainty u.nii.gz
    """
    start(quiet, as_json)
    from tumorcli.cli.subjects import subjects_from_options, take_shard
    from tumorcli.errors import BadInput

    if output is None:
        raise BadInput("-o/--output is missing", "give seg.nii.gz, or a folder for a cohort")
    if not 0 <= overlap <= 0.9:
        raise BadInput(f"--overlap {overlap}: outside 0–0.9", "e.g. --overlap 0.5")
    single = output.name.lower().endswith((*NIFTI, ".dcm"))
    if single and output.name.lower().endswith(".dcm") != (to is Target.seg):
        raise BadInput(f"{output}: a .dcm output needs --to seg, and --to seg a .dcm name",
                       "e.g. -o seg.dcm --to seg, or -o seg.nii.gz")
    subjects = subjects_from_options(input, {"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f},
                                     None)
    if single and len(subjects) > 1:
        raise BadInput(f"{input}: holds {len(subjects)} subjects but -o {output} is one file",
                       "give an output folder for a cohort")
    if probabilities is not None and (not single or not probabilities.name.endswith(NIFTI)):
        raise BadInput("--probabilities needs one subject and a .nii.gz name",
                       "e.g. -o seg.nii.gz --probabilities prob.nii.gz")
    if refine is None and (uncertainty is not None or refiner is not None or unconditional):
        raise BadInput("--uncertainty, --refiner and --unconditional need --refine",
                       "e.g. --refine medsegdiff --samples 5 --uncertainty u.nii.gz")
    if samples < 1 or steps < 1:
        raise BadInput(f"--samples {samples} / --steps {steps}: must be at least 1",
                       "e.g. --steps 10 --samples 5")
    if uncertainty is not None and (not single or not uncertainty.name.endswith(NIFTI)):
        raise BadInput("--uncertainty needs one subject and a .nii.gz name",
                       "e.g. -o seg.nii.gz --uncertainty u.nii.gz")
    if not single and output.exists() and not output.is_dir():
        raise BadInput(f"{output}: exists and is not a folder", "give an output folder")
    subjects = take_shard(subjects, shard)

    from tumorcli.infer.segment import Segmenter, find_model_folder
    from tumorcli.runtime import resolve_device, seed_everything

    seed_everything(seed)
    segmenter_folder = find_model_folder(model)
    segmenter = Segmenter.load(segmenter_folder, resolve_device(device), overlap, postprocess)
    options = None
    if refine is not None:
        from tumorcli.infer.refine import RefineOptions, Refiner

        folder = find_model_folder(refiner or f"refine-{refine.value}")
        loaded = Refiner.load(folder, segmenter.device, postprocess)
        if loaded.spec.refiner != refine.value:
            raise BadInput(f"{folder}: a {loaded.spec.refiner} refiner, not {refine.value}",
                           f"use --refine {loaded.spec.refiner} or another --refiner")
        loaded.check_prior(segmenter.config, folder)
        options = RefineOptions(loaded, steps, start_step, samples, seed, not unconditional,
                                refine_sampler.value)
    if not single:
        from tumorcli.cli.batch import model_digest

        made_with = {"model": model_digest(segmenter_folder), "tta": tta, "overlap": overlap,
                     "postprocess": postprocess, "to": to.value, "seed": seed,
                     "refine": None if options is None else {
                         "refiner": model_digest(folder), "steps": steps, "start": start_step,
                         "samples": samples, "sampler": refine_sampler.value,
                         "conditional": not unconditional}}
        return _cohort(segmenter, subjects, output, to, tta, options, overwrite, made_with,
                       quiet, as_json)
    from tumorcli.infer.segment_files import segment_subjects

    result, errors = segment_subjects(segmenter, [(s, output) for s in subjects], tta=tta,
                                      probabilities=probabilities, overwrite=True,
                                      refine=options, uncertainty=uncertainty)
    if errors:
        raise errors[0]
    finish(result, as_json=as_json, quiet=quiet, human=_show)


def _cohort(segmenter, subjects: list, output: Path, to: Target, tta: bool, refine,
            overwrite: bool, made_with: dict, quiet: bool, as_json: bool) -> None:
    """Each subject into its own file (see _labels_path), resumable: cli/batch.py."""
    from tumorcli.cli.batch import LOGS, Batch, made_once
    from tumorcli.infer.segment_files import segment_one
    from tumorcli.preprocess.inputs import sha256_of
    from tumorcli.progress import task

    output.mkdir(parents=True, exist_ok=True)
    modalities = segmenter.config.modalities

    def labels_of(subject) -> dict:
        final = _labels_path(subject, output, to)
        made_from = {"inputs": {m: sha256_of(subject.images[m]) for m in modalities
                                if m in subject.images}, **made_with}
        row: dict = {}

        def make(staged: Path) -> dict:
            row.update(segment_one(segmenter, subject, staged, tta, None, refine))
            return {"seconds": row["seconds"], "volumes_cm3": row["volumes_cm3"]}

        if made_once(final, made_from, "segment", make, overwrite)["status"] == "skipped":
            return {"subject": subject.name, "status": "skipped", "output": str(final)}
        return {**row, "output": str(final)}

    batch = Batch("segment", output / LOGS)
    with task("Segmenting", total=len(subjects)) as advance:
        rows = batch.rows(subjects, labels_of, advance=advance,
                          outputs=lambda s: [_labels_path(s, output, to)])
    if batch.errors and len(subjects) == 1:
        raise batch.errors[0]
    result = {"model": segmenter.config.architecture, "tta": tta,
              "refine": refine.refiner.spec.refiner if refine else None, "subjects": rows,
              "summary": batch.summary()}
    finish(result, as_json=as_json, quiet=quiet, human=lambda result: (_show(result),
                                                                       batch.show()))
    batch.raise_if_failed()


def _labels_path(subject, output: Path, to: Target) -> Path:
    """output/<case>-seg.nii.gz (.dcm with --to seg); inside output/<case>/ when that is the
    subject's own folder (segmenting a preprocessed cohort in place)."""
    name = f"{subject.name}-seg{'.dcm' if to is Target.seg else '.nii.gz'}"
    folder = subject.folder
    if folder is not None and folder.parent.resolve() == output.resolve():
        return folder / name
    return output / name


def _show(result: dict) -> None:
    from rich.table import Table

    table = Table("subject", "status", "seconds", "WT cm³", "TC cm³", "ET cm³", "output / error",
                  title=f"Segmented with {result['model']}", title_justify="left")
    for row in result["subjects"]:
        volumes = row.get("volumes_cm3") or {}
        table.add_row(row["subject"], row["status"],
                      "" if row.get("seconds") is None else f"{row['seconds']:.1f}",
                      *(f"{volumes[r]:.1f}" if r in volumes else "" for r in ("WT", "TC", "ET")),
                      row.get("error") or row.get("output", ""))
    console().print(table)
