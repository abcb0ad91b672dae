"""The one path from a subject's four scans to the tensor a segmentation net sees, shared by
training and inference so that both see exactly the same thing.

1. the modalities must share one grid (co-registered, as BraTS data or `tumor preprocess`
   output); 2. reoriented exactly to LPS, BraTS's array orientation, so a net trained on BraTS
   layout sees the same axes whatever the file's orientation; 3. resampled (linear, with a
   Gaussian anti-alias when shrinking) to the net's isotropic spacing; 4. z-scored inside the
   brain (the voxels that are not 0 in any modality: inputs must be skull-stripped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorcli.errors import BadInput
from tumorcli.io.itk import Grid
from tumorcli.io.volume import Volume

NET_ORIENTATION = "LPS"
MAX_BRAIN_FRACTION = 0.97  # above this, the image still has its head: not skull-stripped


@dataclass(frozen=True)
class Prepared:
    """image: (C, X, Y, Z) float32 on `grid` (the net's grid); brain: (X, Y, Z) bool there;
    source_grid: the grid of the input files, where outputs go back to; means, sds: each
    channel's brain mean and sd in input units (image = (input − mean) / sd in the brain)."""

    image: np.ndarray
    brain: np.ndarray
    grid: Grid
    source_grid: Grid
    means: tuple[float, ...] = ()
    sds: tuple[float, ...] = ()


def check_same_grid(volumes: dict[str, Volume]) -> Grid:
    """The grid the modalities share; BadInput naming the two that differ."""
    items = list(volumes.items())
    first_name, first = items[0]
    for name, volume in items[1:]:
        same_shape = volume.shape[:3] == first.shape[:3]
        if not same_shape or not np.allclose(volume.affine, first.affine, atol=1e-3):
            what = (f"{volume.shape[:3]} vs {first.shape[:3]} voxels" if not same_shape
                    else "the same voxel count but another position/orientation")
            raise BadInput(f"{volume.source or name}: the {name} image is not on the {first_name} "
                           f"grid ({what})",
                           "co-register the modalities first: tumor preprocess -i SUBJECT -o OUT")
    return Grid.of(first)


def net_grid(grid: Grid, spacing_mm: float) -> Grid:
    """`grid`'s field of view with LPS axes at `spacing_mm` (the input grid itself when it
    already is one)."""
    from nibabel import orientations

    codes = "".join(orientations.aff2axcodes(grid.affine))
    if codes != NET_ORIENTATION:
        current = orientations.io_orientation(grid.affine)
        transform = orientations.ornt_transform(
            current, orientations.axcodes2ornt(tuple(NET_ORIENTATION)))
        affine = grid.affine @ orientations.inv_ornt_aff(transform, grid.shape)
        order = [int(axis) for axis in transform[:, 0]]
        shape = tuple(int(n) for n in np.array(grid.shape)[np.argsort(order)])
        grid = Grid(shape, affine)
    if np.allclose(grid.spacing, spacing_mm, atol=1e-3):
        return grid
    return grid.with_spacing(spacing_mm)


def onto_grid(array: np.ndarray, source: Grid, target: Grid, *, labels: bool = False,
              blur: bool = True) -> np.ndarray:
    """`array` (on `source`) on `target`: copied when the grids match, else resampled in world
    space (linear with an anti-alias blur when shrinking; labels by nearest neighbour)."""
    if source.shape == target.shape and np.allclose(source.affine, target.affine, atol=1e-4):
        return array
    from tumorcli.io.itk import from_sitk, to_sitk

    import SimpleITK as sitk

    image = to_sitk(array.astype(np.uint8 if labels else np.float32), source.affine)
    if blur and not labels:
        shrink = np.array(target.spacing) / np.array(source.spacing)
        if np.any(shrink > 1.01):
            # sigma for a box-like footprint of the new voxel (ITK's shrink-image convention)
            sigma = np.sqrt(np.maximum(np.array(target.spacing) ** 2
                                       - np.array(source.spacing) ** 2, 0)) / 2.355
            sigma_lps = [float(s) for s in sigma]
            image = sitk.SmoothingRecursiveGaussian(image, sigma_lps)
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    out = sitk.Resample(image, target.reference(), sitk.Transform(), interpolator, 0.0)
    return from_sitk(out)


def prepare(volumes: dict[str, Volume], modalities: tuple[str, ...], spacing_mm: float
            ) -> Prepared:
    """The net's input for one subject: `volumes` maps each of `modalities` to its image."""
    missing = [m for m in modalities if m not in volumes]
    if missing:
        raise BadInput(f"no {', '.join(missing)} image given", "the model needs "
                       + ", ".join(modalities))
    ordered = {m: volumes[m] for m in modalities}
    source = check_same_grid(ordered)
    target = net_grid(source, spacing_mm)
    brain_source = np.zeros(source.shape, bool)
    for volume in ordered.values():
        brain_source |= np.asarray(volume.array) != 0
    # the mask is carried separately: an anti-alias blur would leave no exact zeros behind
    brain = onto_grid(brain_source.astype(np.float32), source, target, blur=False) >= 0.5
    channels = [onto_grid(np.asarray(v.array, np.float32), source, target)
                for v in ordered.values()]
    fraction = float(brain.mean())
    name = ordered[modalities[0]].source or modalities[0]
    if fraction == 0:
        raise BadInput(f"{name}: every voxel of every modality is 0 (empty images)",
                       "check the files are the subject's scans")
    if fraction > MAX_BRAIN_FRACTION:
        raise BadInput(f"{name}: almost no voxel is 0, so the scans are not skull-stripped "
                       "(the models were trained on skull-stripped scans, as BraTS)",
                       "run tumor preprocess first (it co-registers and skull-strips)")
    image = np.zeros((len(channels), *target.shape), np.float32)  # (C, X, Y, Z), 0 outside
    means, sds = [], []
    for index, channel in enumerate(channels):
        inside = channel[brain]
        means.append(float(inside.mean()))
        sds.append(float(inside.std()) or 1.0)
        image[index][brain] = (inside - means[-1]) / sds[-1]
    return Prepared(image, brain, target, source, tuple(means), tuple(sds))
