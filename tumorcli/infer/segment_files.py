"""Segmenting subjects from files to files: read the scans, run the Segmenter, write NIfTI or
DICOM SEG atomically, skip finished outputs, and keep going when one subject fails."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tumorcli.errors import BadInput, TumorError
from tumorcli.infer.segment import Segmenter, segment_volumes
from tumorcli.io.volume import save_volume
from tumorcli.progress import task


def segment_subjects(segmenter: Segmenter, jobs: list[tuple], *, tta: bool = False,
                     probabilities: Path | None = None, overwrite: bool = False,
                     refine=None, uncertainty: Path | None = None
                     ) -> tuple[dict, list[TumorError]]:
    """jobs: (SubjectInputs, output path). Returns ({"model", "subjects": [row per subject]},
    the errors of the subjects that failed); a failed row says "failed" and the message."""
    rows, errors = [], []
    with task("Segmenting", total=len(jobs)) as advance:
        for subject, out in jobs:
            if out.exists() and not overwrite:
                rows.append({"subject": subject.name, "status": "skipped", "output": str(out)})
            else:
                try:
                    rows.append(segment_one(segmenter, subject, out, tta, probabilities, refine,
                                            uncertainty))
                except TumorError as error:
                    rows.append({"subject": subject.name, "status": "failed",
                                 "error": error.message})
                    errors.append(error)
            advance()
    return {"model": segmenter.config.architecture, "tta": tta,
            "refine": refine.refiner.spec.refiner if refine else None, "subjects": rows}, errors


def segment_one(segmenter: Segmenter, subject, out: Path, tta: bool,
                probabilities: Path | None, refine=None, uncertainty: Path | None = None) -> dict:
    from tumorcli.preprocess.inputs import read_scan

    modalities = segmenter.config.modalities
    missing = [m for m in modalities if m not in subject.images]
    if missing:
        raise BadInput(f"{subject.name}: no {', '.join(missing)} image",
                       "the model needs " + ", ".join(modalities))
    volumes = {m: read_scan(subject.images[m], m) for m in modalities}
    began = time.perf_counter()
    result = segment_volumes(segmenter, volumes, tta, refine)
    seconds = time.perf_counter() - began
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.lower().endswith(".dcm"):
        _write_seg(result.labels, subject.images["t1c"], out)
    else:
        save_volume(result.labels, out)
    if probabilities is not None:
        save_volume(result.probabilities, probabilities, dtype=np.float32)
    if uncertainty is not None:
        save_volume(result.uncertainty, uncertainty, dtype=np.float32)
    labels = result.labels.array
    voxel_cm3 = result.labels.voxel_volume_mm3 / 1000
    volumes_cm3 = {"WT": float((labels > 0).sum() * voxel_cm3),
                   "TC": float(np.isin(labels, (1, 3)).sum() * voxel_cm3),
                   "ET": float((labels == 3).sum() * voxel_cm3)}
    return {"subject": subject.name, "status": "done", "output": str(out),
            "seconds": round(seconds, 2), "volumes_cm3": volumes_cm3}


def _write_seg(labels, t1c: Path, out: Path) -> None:
    """A DICOM SEG referencing the T1c series (the folder's series described as T1c when it
    holds several)."""
    from tumorcli.io.dicom import find_series
    from tumorcli.io.dicom_seg import write_dicom_seg
    from tumorcli.preprocess.inputs import modality_of

    if not t1c.is_dir():
        raise BadInput(f"{t1c}: --to seg needs the T1c as a DICOM series folder, not NIfTI",
                       "write NIfTI (-o seg.nii.gz), or segment from DICOM")
    series = find_series(t1c)
    chosen = None
    if len(series) > 1:
        chosen = next(s.uid for s in series if modality_of(s.description) == "t1c")
    write_dicom_seg(labels, t1c, out, series=chosen)
