"""Seconds per subject and quality figures of `tumor preprocess` on a native synthetic subject.

    python benchmarks/preprocess_speed.py --size small --spacing 2     # ~1 min on 2 cores
    python benchmarks/preprocess_speed.py --size full                  # BraTS grid, 1 mm

Prints: seconds per subject (4 modalities, every step) and per step; co-registration error
(mm, mean over brain voxels) of t1n/t2w/t2f vs the true transforms; atlas-registration error
(mm, the affine vs the true subject->template map, which includes a smooth non-linear part);
brain-mask Dice vs the true brain; white-matter CoV of the T1c before/after N4; invert round
trip Dice (brain mask -> native T1c grid -> back). With `--peer`, the same T1c<-FLAIR rigid
registration through ANTsPy when `antspyx` is installed (it is not a dependency).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tumorcli.io import itk
from tumorcli.io.volume import load_volume
from tumorcli.preprocess import brain, intensity, quality, spatial
from tumorcli.preprocess.inputs import find_cohort
from tumorcli.preprocess.pipeline import PreprocessConfig, invert, preprocess_subject
from tumorcli.synth.cohort import CohortConfig, make_cohort, session_truth, simulate_subject
from tumorcli.synth.grid import output_grid

_LPS = np.diag([-1.0, -1.0, 1.0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--spacing", type=float, default=None, help="output mm (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--peer", action="store_true", help="also time ANTsPy rigid (t1c<-t2f)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        config = CohortConfig(subjects=1, sessions=1, seed=args.seed, space="native",
                              size=args.size, skull=True)
        make_cohort(config, scratch / "cohort")
        subject = find_cohort(scratch / "cohort")[0]
        truth_grid = output_grid(args.size)
        model = simulate_subject(config, 0)
        truth = session_truth(model, 0, truth_grid)
        transforms = json.loads((subject.folder / f"{subject.name}-transforms.json").read_text())
        native_to_atlas = {m: np.array(v["native_to_atlas_world"])
                           for m, v in transforms["modalities"].items()}

        (scratch / "out").mkdir()
        began = time.perf_counter()
        preprocess_subject(subject, scratch / "out", PreprocessConfig(spacing_mm=args.spacing))
        seconds = time.perf_counter() - began
        folder = scratch / "out" / subject.name
        record = json.loads((folder / "preprocess.json").read_text())
        print(f"seconds per subject (4 modalities, all steps, {args.size}): {seconds:.1f}")
        print("  steps: " + ", ".join(f"{s['name']} {s['seconds']:.1f}" for s in record["steps"]))

        points = quality.points_of(truth.brain_mask, truth_grid.affine, step=2)
        for modality in ("t1n", "t2w", "t2f"):
            error = quality.coregistration_error_mm(
                np.array(record["transforms"][modality]["t1c_to_native_ras"]), native_to_atlas,
                modality, points)
            print(f"co-registration error {modality} -> t1c: {error:.2f} mm")
        ours, best = _atlas_error(record, model, native_to_atlas, points)
        print(f"atlas-registration error (affine vs true warp): {ours:.2f} mm "
              f"(the best affine fit to the true warp: {best:.2f} mm)")

        output_to_native = np.array(record["transforms"]["t1c"]["output_to_native_ras"])
        grid = itk.Grid(tuple(record["output_grid"]["shape"]),
                            np.array(record["output_grid"]["affine"]))
        output_to_t1c = np.array(record["transforms"]["output_to_t1c_ras"])
        true_mask = spatial.resample_onto(
            spatial.to_sitk(truth.brain_mask.astype(np.float32), truth_grid.affine), grid,
            itk.transform_from_ras(native_to_atlas["t1c"] @ output_to_t1c)) >= 0.5
        mask_path = folder / f"{subject.name}-brainmask.nii.gz"
        mask = load_volume(mask_path).array > 0
        print(f"brain-mask Dice vs truth: {quality.dice(mask, true_mask):.4f}")

        raw = spatial.resample_onto(
            spatial.volume_to_sitk(load_volume(subject.images["t1c"])), grid,
            itk.transform_from_ras(output_to_native))
        atlas = brain.load_atlas("sri24")
        white = (spatial.resample_onto(spatial.to_sitk(atlas.white_matter, atlas.image.affine),
                                       grid) >= 0.9) & mask
        corrected, _ = intensity.n4_correct(raw, grid.affine, mask)
        print(f"T1c white-matter CoV before/after N4: {quality.white_matter_cov(raw, white):.3f}"
              f" / {quality.white_matter_cov(corrected, white):.3f}")

        native_path = scratch / "mask-native.nii.gz"
        invert(mask_path, folder / "preprocess.json", native_path, onto="t1c")
        native_mask = load_volume(native_path)
        back = spatial.resample_labels(
            native_mask.array, native_mask.affine, grid,
            itk.transform_from_ras(output_to_native))
        print(f"invert round trip Dice (atlas -> native t1c -> atlas): "
              f"{quality.dice(back > 0, mask):.4f}")
        if args.peer:
            _peer(subject, native_to_atlas, points)


def _atlas_error(record: dict, model, native_to_atlas: dict,
                 points: np.ndarray) -> tuple[float, float]:
    """Mean |ours(template point) - true native T1c point| over the subject's brain points,
    and the same for the least-squares affine fit to the truth (what no affine can beat)."""
    warp = model.warp.transform()  # subject atlas mm -> template mm (LPS inside)
    template = np.array([_LPS @ warp.TransformPoint(tuple(_LPS @ p)) for p in points[::8]])
    ours = quality.apply(np.array(record["transforms"]["output_to_t1c_ras"]), template)
    truth = quality.apply(np.linalg.inv(native_to_atlas["t1c"]), points[::8])
    homogeneous = np.hstack([template, np.ones((len(template), 1))])
    fit, *_ = np.linalg.lstsq(homogeneous, truth, rcond=None)
    best = homogeneous @ fit
    return (float(np.linalg.norm(ours - truth, axis=1).mean()),
            float(np.linalg.norm(best - truth, axis=1).mean()))


def _peer(subject, native_to_atlas: dict, points: np.ndarray) -> None:
    try:
        import ants
    except ImportError:
        print("peer: antspyx is not installed (pip install antspyx to compare)")
        return
    fixed = ants.image_read(str(subject.images["t1c"]))
    moving = ants.image_read(str(subject.images["t2f"]))
    began = time.perf_counter()
    result = ants.registration(fixed, moving, type_of_transform="Rigid")
    seconds = time.perf_counter() - began
    registered = sitk.ReadTransform(result["fwdtransforms"][0])  # t1c mm -> t2f mm (LPS)
    error = quality.coregistration_error_mm(itk.ras_matrix(registered.Downcast()), native_to_atlas,
                                            "t2f", points)
    print(f"peer ANTsPy rigid t2f -> t1c: {seconds:.1f} s, {error:.2f} mm")


if __name__ == "__main__":
    sys.exit(main())
