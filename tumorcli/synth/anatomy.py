"""Per-subject anatomy: the vendored SRI24 template, warped so that no two brains are alike.

The template (see data/README.md) gives CSF/GM/WM probabilities, the non-brain head classes
(bone, fat, soft tissue) and lobe labels on the BraTS grid. A subject is the template seen
through a random smooth deformation and a random scaling; a growing tumour adds a mass effect
that pushes the surrounding brain away.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from tumorcli.io.itk import Grid, from_sitk, to_sitk
from tumorcli.synth.grid import BRATS_AFFINE, atlas_grid, smooth_random_field

HEAD_CLASSES = ("bone", "fat", "soft_tissue")  # labels 1, 2, 3 of data/head.nii.gz
LOBE_NAMES = {1: "frontal", 2: "parietal", 3: "temporal", 4: "occipital", 5: "insular",
              6: "thalamic", 7: "internal capsule", 8: "corpus callosum", 9: "brainstem"}
TEMPLATE_MIDLINE_X = -119.5  # RAS x of the SRI24 mid-sagittal plane on the BraTS grid


@dataclass(frozen=True)
class Template:
    """Template maps on the 1 mm BraTS grid; tissue as (X, Y, Z, 3) csf/gm/wm fractions."""

    tissue: np.ndarray  # (240, 240, 155, 3) float32 in [0, 1]
    head: np.ndarray    # (240, 240, 155) uint8: 0 air/brain, 1 bone, 2 fat, 3 soft tissue
    lobes: np.ndarray   # (240, 240, 155) uint8, LOBE_NAMES keys; 0 elsewhere (cerebellum ...)
    grid: Grid


def _read(name: str) -> np.ndarray:
    path = resources.files("tumorcli.synth") / "data" / name
    with resources.as_file(path) as real_path:
        image = nib.load(str(real_path))
        if not np.allclose(image.affine, BRATS_AFFINE):
            raise RuntimeError(f"{name}: not on the BraTS grid; rebuild with build_template.py")
        return np.asanyarray(image.dataobj)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The vendored template (cached per process)."""
    tissue = np.stack([_read(f"sri24_{name}.nii.gz") for name in ("csf", "gm", "wm")], axis=-1)
    return Template(tissue=tissue.astype(np.float32) / 255.0, head=_read("head.nii.gz"),
                    lobes=_read("lobes.nii.gz"), grid=atlas_grid(1.0))


@dataclass(frozen=True)
class SubjectWarp:
    """How one subject differs from the template.

    scale: per-axis size factors (about the brain centre); displacement: a smooth field (mm)
    on a coarse grid. `transform()` maps subject-space mm to template mm.
    """

    scale: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    displacement: np.ndarray  # (X, Y, Z, 3) mm, RAS, on `field_grid`
    field_grid: Grid

    def transform(self) -> sitk.Transform:
        centre = np.array([TEMPLATE_MIDLINE_X, 119.5, 77.0])
        rotation = rotation_matrix(np.radians(self.rotation_deg))
        linear = rotation @ np.diag(1.0 / np.asarray(self.scale))  # subject -> template
        affine = sitk.AffineTransform(3)
        lps = np.diag([-1.0, -1.0, 1.0])
        affine.SetMatrix((lps @ linear @ lps).ravel().tolist())
        affine.SetCenter((lps @ centre).tolist())
        composite = sitk.CompositeTransform(3)
        composite.AddTransform(affine)
        composite.AddTransform(displacement_transform(self.displacement, self.field_grid))
        return composite  # applied last-added first: smooth warp, then scaling


def random_warp(rng: np.random.Generator, amplitude_mm: float = 2.5) -> SubjectWarp:
    """A subject's anatomy: sizes ±7 %, a few degrees of tilt, smooth warps of ~amplitude_mm."""
    field_grid = atlas_grid(8.0)
    displacement = amplitude_mm * rng.uniform(0.6, 1.4) * smooth_random_field(
        rng, field_grid, control_points=6, channels=3)  # (X, Y, Z, 3) mm
    return SubjectWarp(scale=tuple(float(s) for s in rng.uniform(0.93, 1.07, 3)),
                       rotation_deg=tuple(float(a) for a in rng.normal(0, 2.0, 3)),
                       displacement=displacement, field_grid=field_grid)


def displacement_transform(displacement_ras: np.ndarray, grid: Grid) -> sitk.Transform:
    """A dense displacement field (X, Y, Z, 3) in RAS mm as an ITK transform (p -> p + d(p))."""
    lps = displacement_ras.astype(np.float64) * np.array([-1.0, -1.0, 1.0])
    field = to_sitk(lps, grid.affine)
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Anatomy:
    """A subject's anatomy on one grid.

    tissue: (X, Y, Z, 3) csf/gm/wm fractions; head: non-brain class labels; lobes: lobe labels.
    """

    tissue: np.ndarray
    head: np.ndarray
    lobes: np.ndarray
    grid: Grid

    @property
    def brain_fraction(self) -> np.ndarray:
        return self.tissue.sum(axis=-1)


def subject_anatomy(transform: sitk.Transform, grid: Grid) -> Anatomy:
    """Resample the template through `transform` (grid mm -> template mm) onto `grid`."""
    template = load_template()
    reference = grid.reference()
    if min(grid.spacing) < 2.0:  # one 2 mm displacement field is faster than a chain of transforms
        coarse = atlas_grid(2.0).reference()
        field = sitk.TransformToDisplacementField(
            transform, sitk.sitkVectorFloat64, coarse.GetSize(), coarse.GetOrigin(),
            coarse.GetSpacing(), coarse.GetDirection())
        transform = sitk.DisplacementFieldTransform(field)
    tissue = sitk.Resample(to_sitk(template.tissue, template.grid.affine), reference, transform,
                           sitk.sitkLinear, 0.0)
    labels = to_sitk(np.stack([template.head, template.lobes], axis=-1), template.grid.affine)
    labels = from_sitk(sitk.Resample(labels, reference, transform, sitk.sitkNearestNeighbor, 0))
    return Anatomy(tissue=from_sitk(tissue).astype(np.float32), head=labels[..., 0],
                   lobes=labels[..., 1], grid=grid)


@dataclass(frozen=True)
class MassEffect:
    """Radial push of the brain away from a tumour: centre (RAS mm), added volume (cm³).

    Tissue at distance r from the centre moves to (r³ + 3V/4π)^(1/3), fading with distance
    (decay_mm) so that the skull does not move.
    """

    centre_mm: tuple[float, float, float]
    volume_cm3: float
    decay_mm: float = 25.0

    def _shift(self, r: np.ndarray) -> np.ndarray:
        radius_mm = (3 * self.volume_cm3 * 1000 / (4 * np.pi)) ** (1 / 3)
        source_r = np.cbrt(np.maximum(r**3 - radius_mm**3, 0.0))
        return (source_r - r) * np.exp(-np.maximum(r - radius_mm, 0.0) / self.decay_mm)

    def displacement(self, grid: Grid) -> np.ndarray:
        """(X, Y, Z, 3) RAS mm: output point p samples the undeformed brain at p + d(p)."""
        index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
        offset = grid.world(index) - np.asarray(self.centre_mm)
        r = np.linalg.norm(offset, axis=-1)
        direction = offset / np.maximum(r, 1e-6)[..., None]
        return (direction * self._shift(r)[..., None]).astype(np.float32)

    def reach_mm(self, tolerance_mm: float) -> float:
        """Distance from the centre beyond which tissue moves less than `tolerance_mm`."""
        r = np.linspace(0.0, 400.0, 4001)
        moved = np.abs(self._shift(r)) >= tolerance_mm
        return float(r[moved].max()) + 1.0 if moved.any() else 0.0

    def midline_shift_mm(self) -> float:
        """How far the mid-sagittal plane moves sideways at the tumour's level (mm)."""
        distance = abs(self.centre_mm[0] - TEMPLATE_MIDLINE_X)
        candidates = np.linspace(distance, distance + 40.0, 4001)  # where the midline ends up
        landed = candidates + self._shift(candidates)
        return float(candidates[np.argmin(np.abs(landed - distance))] - distance)

    def transform(self, grid: Grid) -> sitk.Transform:
        return displacement_transform(self.displacement(grid), grid)


def growth_grid(spacing_mm: float, margin_mm: float = 14.0) -> Grid:
    """A grid of `spacing_mm` covering the template brain (+ margin for larger subjects)."""
    template = load_template()
    index = np.argwhere(template.tissue.sum(axis=-1) > 0.05)
    corners = template.grid.world(np.array([index.min(0) - margin_mm, index.max(0) + margin_mm]))
    coarse = atlas_grid(spacing_mm)
    inverse = np.linalg.inv(coarse.affine)
    corners_index = corners @ inverse[:3, :3].T + inverse[:3, 3]
    return coarse.cropped(np.floor(corners_index.min(0)), np.ceil(corners_index.max(0)) + 1)


def seed_sites(anatomy: Anatomy) -> np.ndarray:
    """Where a glioma may start: cerebral white matter (not brainstem, cerebellum)."""
    return (anatomy.lobes >= 1) & (anatomy.lobes <= 8) & (anatomy.tissue[..., 2] >= 0.8)
