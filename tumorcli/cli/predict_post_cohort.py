"""`tumor predict-post --cohort`: the pre-treatment session of every patient of a cohort (the
first case folder by id), its mask (--seg-dir or its own *-seg.nii.gz) and survival class (a
cohort.csv-style table or --survival), each prediction into OUT/<case>-post-t1c.nii.gz with a
resume record, through the shared batch helpers (cli/batch.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tumorcli.cli.common import console, finish
from tumorcli.cli.predict_post import POST_SUFFIX, Survival, read_mask


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


def predict_cohort(predictor, sessions: list[PreSession], output: Path, seg_dir: Path | None,
                   survival: str | None, table: Path, options: dict, overwrite: bool,
                   quiet: bool, as_json: bool) -> None:
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
            result = predictor.predict(read_scan(t1c, "t1c"), read_mask(mask, t1c),
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
