"""Where voxels are: geometry checks, SimpleITK bridge, registration, resampling, cropping.

Conventions. A `Volume` carries a RAS+ affine (voxel index -> mm); SimpleITK works in LPS mm.
`to_sitk`/`from_sitk` convert both ways without moving a voxel. Every transform here follows
ITK's resampling convention: it maps a point of the *output* (fixed) space to the *input*
(moving) space, e.g. `coregister(t1c, t2f)` returns t1c mm -> t2f mm, and `resample_onto`
pulls the moving image through it. `ras_matrix` gives any affine transform as a 4×4 RAS map
for the record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from tumorcli.errors import BadInput
from tumorcli.io import itk
from tumorcli.io.itk import Grid, from_sitk, ras_matrix, transform_from_ras
from tumorcli.io.volume import Volume

SANE_SPACING_MM = (0.1, 10.0)


# --- geometry -----------------------------------------------------------------------------

def checked(volume: Volume, name: str) -> Volume:
    """`volume` reoriented to RAS after checking it is a usable 3D scan; BadInput naming it."""
    where = volume.source or name
    if volume.array.ndim != 3:
        raise BadInput(f"{where}: {name} has {volume.array.ndim} dimensions but a 3D volume is "
                       "needed", "pass one 3D volume per modality (split 4D series first)")
    spacing = volume.spacing
    if not all(SANE_SPACING_MM[0] <= s <= SANE_SPACING_MM[1] for s in spacing):
        raise BadInput(f"{where}: {name} has voxels of {'×'.join(f'{s:g}' for s in spacing)} mm, "
                       f"outside {SANE_SPACING_MM[0]:g}–{SANE_SPACING_MM[1]:g} mm",
                       "check the header's pixel spacing (mm, not m or µm)")
    if min(volume.shape) < 4:
        raise BadInput(f"{where}: {name} has only {min(volume.shape)} voxels along one axis",
                       "give a 3D volume, not a single slice")
    array = np.asarray(volume.array)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise BadInput(f"{where}: {name} holds {array.dtype} voxels", "give a real-valued image")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise BadInput(f"{where}: {name} holds NaN or infinite voxels",
                       "re-export the image, or replace non-finite voxels")
    if float(array.max()) <= float(array.min()):
        raise BadInput(f"{where}: {name} is constant (every voxel {array.flat[0]})",
                       "the scan holds no image; check the export")
    return volume.reoriented("RAS")


# --- SimpleITK bridge ---------------------------------------------------------------------

def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """(X, Y, Z) array + RAS affine -> SimpleITK image, float32 unless an integer type the
    registration and N4 filters take as it is."""
    array = np.asarray(array)
    if array.dtype not in (np.bool_, np.uint8, np.int16, np.uint16, np.int32):
        array = array.astype(np.float32)
    return itk.to_sitk(array, affine)


def volume_to_sitk(volume: Volume) -> sitk.Image:
    return to_sitk(volume.array, volume.affine)


# --- transforms ---------------------------------------------------------------------------

def chain(*transforms: sitk.Transform | None) -> sitk.Transform:
    """One transform applying `transforms` in the order given (first maps output points)."""
    composite = sitk.CompositeTransform(3)
    for transform in reversed([t for t in transforms if t is not None]):
        composite.AddTransform(transform)  # ITK applies the last-added first
    return composite


def inverse(transform: sitk.Transform) -> sitk.AffineTransform:
    """The inverse of an affine-family transform, as an AffineTransform."""
    return transform_from_ras(np.linalg.inv(ras_matrix(transform)))


# --- registration -------------------------------------------------------------------------

@dataclass(frozen=True)
class RegistrationSettings:
    """Mattes mutual information, multi-resolution, regular-step gradient descent.

    shrink/smooth: per level (pyramid factors, Gaussian sigma in mm); sampling: fraction of
    voxels sampled per iteration; working_mm: images are first resampled to this spacing
    (never finer than given), which bounds the cost for 1 mm or finer scans.
    """

    bins: int = 128
    sampling: float = 0.05
    shrink: tuple[int, ...] = (4, 2, 1)
    smooth_mm: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    learning_rate: float = 1.0
    working_mm: float = 2.0


def coregister(fixed: sitk.Image, moving: sitk.Image, *, affine: bool = False,
               initial: sitk.Transform | None = None, fixed_mask: sitk.Image | None = None,
               settings: RegistrationSettings = RegistrationSettings(),
               seed: int = 1) -> sitk.Transform:
    """A rigid (or, with affine=True, 12-parameter) transform: fixed mm -> moving mm.

    initial: a starting transform (default: the images' intensity centres of mass aligned).
    """
    fixed_work = working_copy(fixed, settings.working_mm)
    moving_work = working_copy(moving, settings.working_mm)
    if initial is None:
        initial = sitk.CenteredTransformInitializer(
            fixed_work, moving_work, sitk.Euler3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS)
    if affine:
        start = transform_from_ras(ras_matrix(initial))
        centre = np.array(fixed_work.TransformContinuousIndexToPhysicalPoint(
            [(n - 1) / 2 for n in fixed_work.GetSize()]))
        start = _recentred(start, centre)
    else:
        start = sitk.Euler3DTransform()
        start.SetCenter(initial.GetCenter())
        start.SetMatrix(np.array(initial.GetMatrix()).ravel().tolist())
        start.SetTranslation(initial.GetTranslation())
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling, seed)
    if fixed_mask is not None:
        method.SetMetricFixedMask(sitk.Resample(fixed_mask, fixed_work, sitk.Transform(),
                                                sitk.sitkNearestNeighbor, 0))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.learning_rate, minStep=1e-4, numberOfIterations=settings.iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink))
    method.SetSmoothingSigmasPerLevel(list(settings.smooth_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(start, inPlace=False)
    result = method.Execute(fixed_work, moving_work)
    if isinstance(result, sitk.CompositeTransform):
        result = result.GetNthTransform(0)
    return result.Downcast() if hasattr(result, "Downcast") else result


@dataclass(frozen=True)
class DeformableSettings:
    """B-spline free-form registration: `mesh` control intervals per axis over the fixed image,
    Mattes MI, L-BFGS-B with `iterations` per level on a `working_mm` grid."""

    mesh: int = 4
    bins: int = 64
    sampling: float = 0.02
    shrink: tuple[int, ...] = (4, 2, 1)
    smooth_mm: tuple[float, ...] = (4.0, 2.0, 0.0)
    iterations: int = 20
    working_mm: float = 2.0


def deform(fixed: sitk.Image, moving: sitk.Image,
           settings: DeformableSettings = DeformableSettings(), seed: int = 1) -> sitk.Transform:
    """A smooth B-spline transform fixed mm -> moving mm for images already affinely aligned."""
    fixed_work = working_copy(fixed, settings.working_mm)
    moving_work = working_copy(moving, settings.working_mm)
    transform = sitk.BSplineTransformInitializer(fixed_work, [settings.mesh] * 3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5,
                                numberOfIterations=settings.iterations)
    method.SetShrinkFactorsPerLevel(list(settings.shrink))
    method.SetSmoothingSigmasPerLevel(list(settings.smooth_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed_work, moving_work)
    return transform


def _recentred(transform: sitk.AffineTransform, centre_lps: np.ndarray) -> sitk.AffineTransform:
    """The same map with its centre of rotation at `centre_lps` (better-scaled parameters)."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    offset = np.array(transform.GetTranslation()) + np.array(transform.GetCenter()) \
        - matrix @ np.array(transform.GetCenter())
    recentred = sitk.AffineTransform(3)
    recentred.SetMatrix(matrix.ravel().tolist())
    recentred.SetCenter(centre_lps.tolist())
    recentred.SetTranslation((offset - centre_lps + matrix @ centre_lps).tolist())
    return recentred


def working_copy(image: sitk.Image, working_mm: float) -> sitk.Image:
    """float32 image resampled (with anti-aliasing) to at least `working_mm` voxels."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    spacing = np.array(image.GetSpacing())
    if np.all(spacing >= working_mm * 0.99):
        return image
    new_spacing = np.maximum(spacing, working_mm)
    size = np.maximum(1, np.round(np.array(image.GetSize()) * spacing / new_spacing)).astype(int)
    # anti-aliasing only along axes that get coarser (ITK needs sigma > 0 on every axis)
    sigma = np.maximum(np.sqrt(np.maximum(new_spacing**2 - spacing**2, 0)) / 2.355,
                       0.01 * spacing)
    smoothed = sitk.SmoothingRecursiveGaussian(image, sigma.tolist())
    # keep the field of view: the first voxel centre moves by half the change of voxel size
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ ((new_spacing - spacing) / 2)
    return sitk.Resample(smoothed, [int(n) for n in size], sitk.Transform(), sitk.sitkLinear,
                         origin.tolist(), new_spacing.tolist(), image.GetDirection(), 0.0,
                         sitk.sitkFloat32)


# --- resampling and cropping --------------------------------------------------------------

def resample_onto(image: sitk.Image, grid: Grid, transform: sitk.Transform | None = None, *,
                  kind: str = "linear", outside: float = 0.0) -> np.ndarray:
    """`image` pulled onto `grid` through `transform` (grid mm -> image mm); (X, Y, Z) array.

    kind: 'linear' (float32), 'bspline' (float32) or 'nearest' (the input dtype).
    """
    interpolator = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline,
                    "nearest": sitk.sitkNearestNeighbor}[kind]
    if kind != "nearest":
        image = sitk.Cast(image, sitk.sitkFloat32)
    out = sitk.Resample(image, grid.reference(), transform or sitk.Transform(), interpolator,
                        outside)
    return from_sitk(out)


def resample_labels(labels: np.ndarray, affine: np.ndarray, grid: Grid,
                    transform: sitk.Transform | None = None) -> np.ndarray:
    """A label mask on another grid: each label's indicator interpolated linearly, then the
    most likely label per voxel (smoother than nearest neighbour, keeps thin structures)."""
    values = np.unique(labels)
    best = np.zeros(grid.shape, np.float32)
    out = np.zeros(grid.shape, labels.dtype)
    for value in values:
        indicator = resample_onto(to_sitk((labels == value).astype(np.float32), affine), grid,
                                  transform, outside=1.0 if value == 0 else 0.0)
        better = indicator > best
        out[better], best[better] = value, indicator[better]
    return out


def bounding_box(mask: np.ndarray, margin_voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds low (inclusive), high (exclusive) of `mask` plus a margin, inside the grid."""
    found = np.argwhere(mask)
    if found.size == 0:
        return np.zeros(3, int), np.array(mask.shape)
    low = np.maximum(found.min(axis=0) - margin_voxels, 0)
    high = np.minimum(found.max(axis=0) + 1 + margin_voxels, mask.shape)
    return low.astype(int), high.astype(int)
