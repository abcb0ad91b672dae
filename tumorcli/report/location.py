"""Where the tumour is: hemisphere, lobe and an estimate of the midline shift.

- Hemisphere: the side of the mid-sagittal plane that holds the centroid of the tumour core (the
  whole tumour when the core is under 0.5 cm³), in RAS+ world coordinates from the affine, where
  +x points to the patient's right (nibabel's 'R'); so an LPS-stored grid (BraTS: i runs to the
  patient's left) reads the same as an RAS one. The plane: SRI24's mid-sagittal plane for
  labels on the SRI24 (BraTS) grid, else the mean x of the head mask (the scan's non-zero
  voxels), else the grid's centre. ≥ 10 % of the whole tumour on the other side: "crosses the
  midline".
- Lobe: only for labels in SRI24 space (the grid covers the atlas's field of view within
  10 mm): the vendored lobe map (tumorcli/synth/data/lobes.nii.gz, FSL MNI152 lobe masks
  registered to SRI24) looked up at the tumour's world coordinates; the lobe holding most core
  voxels, and a second lobar one holding ≥ 25 % as many. Other grids: no lobe (the report
  says why: register with `tumor preprocess --atlas sri24` first).
- Midline shift: a model estimate from the labels, not a measurement of the falx or septum:
  the mass (27.5 % × (TC + SNFH / 2), the middle of the synthetic cohort's 15–40 % compliance)
  as a sphere at the whole tumour's centroid pushes tissue radially, fading over 30 mm; the
  shift is how far that moves the mid-sagittal plane (as tumorcli/synth/anatomy.py models it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

MIDLINE_CROSSING = 0.10
COMPLIANCE = 0.275
DECAY_MM = 30.0
SRI24_TOLERANCE_MM = 10.0
SHIFT_METHOD = ("model estimate, not measured on the image: 27.5 % of (TC + SNFH/2) as a sphere "
                "at the tumour's centroid pushing tissue radially, fading over 30 mm")


@dataclass
class Location:
    """Where one session's tumour lies (mm in RAS+ world coordinates)."""

    centroid_ras_mm: list[float]
    hemisphere: str                      # "right" | "left"
    crosses_midline: bool
    other_side_pct: float                # whole-tumour voxels across the mid-sagittal plane
    midline_x_mm: float
    midline_method: str
    lobe: str | None                     # "temporal lobe", "fronto-parietal lobes", ...
    lobes: list[str] = field(default_factory=list)
    lobe_note: str = ""
    midline_shift_mm: float = 0.0
    shift_toward: str | None = None      # away from the tumour
    shift_method: str = SHIFT_METHOD


def world_x(index: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS+ x (mm; + is the patient's right) of voxel indices (N, 3)."""
    return index @ affine[0, :3] + affine[0, 3]


def locate(labels: np.ndarray, affine: np.ndarray, head: np.ndarray | None,
           volumes_cm3: dict[str, float]) -> Location:
    """labels: (X, Y, Z) canonical (1 NETC, 2 SNFH, 3 ET) with some tumour; head: (X, Y, Z)
    bool non-zero voxels of the scan, or None."""
    whole = np.argwhere(labels > 0)
    core = np.argwhere((labels == 1) | (labels == 3))
    mass = core if volumes_cm3["TC"] >= 0.5 else whole
    atlas = _sri24_lobes()
    in_sri24 = atlas is not None and _covers(labels.shape, affine, *atlas[1:])
    if in_sri24:
        from tumorcli.synth.anatomy import TEMPLATE_MIDLINE_X

        midline, method = TEMPLATE_MIDLINE_X, "SRI24 atlas mid-sagittal plane (labels in SRI24)"
    elif head is not None and head.any():
        step = max(1, int(np.count_nonzero(head) // 400_000))  # a subsample gives the same mean
        midline = float(world_x(np.argwhere(head)[::step], affine).mean())
        method = "mean x of the head (the scan's non-zero voxels)"
    else:
        centre = (np.array(labels.shape) - 1) / 2.0
        midline, method = float(world_x(centre[None], affine)[0]), "centre of the grid"
    centroid = mass.mean(axis=0) @ affine[:3, :3].T + affine[:3, 3]
    side = "right" if centroid[0] > midline else "left"  # RAS+: +x is the patient's right
    x_whole = world_x(whole, affine)
    across = np.mean(x_whole < midline) if side == "right" else np.mean(x_whole > midline)
    location = Location([float(c) for c in centroid], side, bool(across >= MIDLINE_CROSSING),
                        float(100.0 * across), float(midline), method, None)
    if in_sri24:
        _add_lobes(location, mass, affine, *atlas)
    else:
        location.lobe_note = ("no lobe: the labels are not on the SRI24 (BraTS) grid; register "
                              "with tumor preprocess --atlas sri24 for a lobe")
    distance = abs(float(world_x(whole.mean(axis=0)[None], affine)[0]) - midline)
    location.midline_shift_mm = midline_shift_mm(
        distance, COMPLIANCE * (volumes_cm3["TC"] + 0.5 * volumes_cm3["SNFH"]))
    if location.midline_shift_mm >= 1.0:
        location.shift_toward = "left" if side == "right" else "right"
    return location


def midline_shift_mm(distance_mm: float, mass_cm3: float) -> float:
    """How far a mass of `mass_cm3` (as a sphere) at `distance_mm` from the mid-sagittal plane
    moves that plane: tissue at radius r is pushed out as if the sphere were inserted
    (r³ − R³ = r₀³), the push fading as exp(−(r − R) / 30 mm)."""
    if mass_cm3 < 0.5:
        return 0.0
    radius = (3 * mass_cm3 * 1000 / (4 * np.pi)) ** (1 / 3)

    def pull(r):  # output point at r samples the undeformed brain at r + pull(r)
        source = np.cbrt(np.maximum(r ** 3 - radius ** 3, 0.0))
        return (source - r) * np.exp(-np.maximum(r - radius, 0.0) / DECAY_MM)

    candidates = np.linspace(distance_mm, distance_mm + 40.0, 4001)
    landed = candidates + pull(candidates)
    return float(candidates[np.argmin(np.abs(landed - distance_mm))] - distance_mm)


@lru_cache(maxsize=1)
def _sri24_lobes():
    """(lobe labels, affine, shape) of the vendored SRI24 lobe map, or None without it."""
    from tumorcli.preprocess.brain import SRI24_DATA

    path = SRI24_DATA / "lobes.nii.gz"
    if not path.is_file():
        return None
    from tumorcli.io.volume import load_volume

    volume = load_volume(path)
    return np.asarray(volume.array), volume.affine, volume.shape


def _bounds(shape, affine) -> np.ndarray:
    corners = np.array([[a, b, c] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1)
                        for c in (0, shape[2] - 1)], float)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return np.stack([world.min(axis=0), world.max(axis=0)])


def _covers(shape, affine, atlas_affine, atlas_shape) -> bool:
    """True when a grid spans the atlas's field of view (each bound within 10 mm)."""
    return bool(np.all(np.abs(_bounds(shape, affine) - _bounds(atlas_shape, atlas_affine))
                       <= SRI24_TOLERANCE_MM))


def _add_lobes(location: Location, index: np.ndarray, affine: np.ndarray, lobes: np.ndarray,
               atlas_affine: np.ndarray, atlas_shape) -> None:
    from tumorcli.synth.anatomy import LOBE_NAMES

    world = index @ affine[:3, :3].T + affine[:3, 3]
    to_atlas = np.linalg.inv(atlas_affine)
    atlas_index = np.rint(world @ to_atlas[:3, :3].T + to_atlas[:3, 3]).astype(int)
    atlas_index = np.clip(atlas_index, 0, np.array(atlas_shape) - 1)
    found = lobes[tuple(atlas_index.T)]
    found = found[found > 0]
    location.lobe_note = "FSL MNI152 lobe masks registered to SRI24 (vendored atlas)"
    if found.size == 0:
        location.lobe, location.lobes = "deep white matter", []
        return
    counts = np.bincount(found, minlength=len(LOBE_NAMES) + 1)
    order = np.argsort(counts)[::-1]
    first = LOBE_NAMES[int(order[0])]
    second = LOBE_NAMES.get(int(order[1])) if counts[order[1]] >= 0.25 * counts[order[0]] else None
    location.lobes = [first] + ([second] if second else [])
    lobar = {"frontal", "parietal", "temporal", "occipital"}
    if second and first in lobar and second in lobar:
        stem = first[:-2] if first.endswith("al") else first
        location.lobe = f"{stem}o-{second} lobes"
    else:
        location.lobe = f"{first} lobe" if first in lobar else f"{first} region"
