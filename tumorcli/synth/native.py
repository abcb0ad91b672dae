"""Native (scanner) space: each modality on its own grid, as an MR scanner writes it.

Per session the head lies in the scanner with a random pose (rotation, translation); each
series adds a little motion of its own and has its own plane, spacing, matrix and field of
view (e.g. sagittal T1 5 mm, axial 3D T1c 0.9×0.9×1 mm, axial FLAIR 0.9×0.9×3 mm). Thick slices
average the image across the slice (a box slice profile). Bias field and Rician noise are
applied on the native grid. The true transforms go to `<session>-transforms.json`:
`native_to_atlas_world` maps scanner mm to atlas mm (RAS), `native_voxel_to_atlas_voxel`
maps a voxel index of the written NIfTI to the atlas grid's voxel index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorcli.io.atomic import atomic_file
from tumorcli.io.volume import Volume, save_volume
from tumorcli.synth import contrast
from tumorcli.synth.anatomy import rotation_matrix
from tumorcli.io.itk import Grid, from_sitk, to_sitk, transform_from_ras

# Columns are the RAS directions of voxel axes i, j, k.
PLANES = {
    "axial": np.diag([-1.0, -1.0, 1.0]),                                  # rows to L, cols to P
    "sagittal": np.array([[0.0, 0, 1], [-1.0, 0, 0], [0, -1.0, 0]]),      # i to P, j to I, k to R
}


@dataclass(frozen=True)
class Protocol:
    """One series: plane, in-plane spacing (mm), slice thickness (mm), matrix, slice count."""

    plane: str
    in_plane_mm: float
    slice_mm: float
    matrix: int
    slices: int


# A common clinical mix: 2D sagittal T1, 3D T1c, 2D axial T2 and FLAIR (thick slices).
PROTOCOLS = {
    "t1n": Protocol("sagittal", 0.9, 5.0, 256, 32),
    "t1c": Protocol("axial", 0.9, 1.0, 256, 144),
    "t2w": Protocol("axial", 0.9, 4.0, 256, 40),
    "t2f": Protocol("axial", 0.9, 3.0, 256, 52),
}
SMALL_MATRIX, SMALL_PIXEL_MM = 96, 2.2  # a 211 mm field of view


def protocol_for(modality: str, size: str) -> Protocol:
    """Full-size protocols; 'small' has 2.2 mm pixels and slices at most 2 mm thicker."""
    full = PROTOCOLS[modality]
    if size == "full":
        return full
    thickness = min(2 * full.slice_mm, full.slice_mm + 2.0)
    slices = int(round(full.slices * full.slice_mm / thickness))
    return Protocol(full.plane, SMALL_PIXEL_MM, thickness, SMALL_MATRIX, slices)


def rigid(rng: np.random.Generator, rotation_sd_deg: float, translation_sd_mm: float,
          centre: np.ndarray) -> np.ndarray:
    """A random 4×4 rigid map (RAS mm) rotating about `centre`."""
    rotation = rotation_matrix(np.radians(rng.normal(0, rotation_sd_deg, 3)))
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + rng.normal(0, translation_sd_mm, 3)
    return matrix


def native_grid(protocol: Protocol, centre_mm: np.ndarray, rng: np.random.Generator) -> Grid:
    """The scanner grid of one series, centred near `centre_mm` (scanner RAS mm)."""
    directions = PLANES[protocol.plane]
    if protocol.plane == "axial":  # slices tilted along the AC–PC line, as radiographers do
        directions = rotation_matrix(np.radians([rng.uniform(-12, 12), 0, 0])) @ directions
    spacing = np.array([protocol.in_plane_mm, protocol.in_plane_mm, protocol.slice_mm])
    shape = np.array([protocol.matrix, protocol.matrix, protocol.slices])
    linear = directions * spacing
    centre = centre_mm + rng.normal(0, 4.0, 3)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre - linear @ ((shape - 1) / 2)
    return Grid(tuple(int(n) for n in shape), affine)


def sample_native(clean: np.ndarray, atlas: Grid, native: Grid, native_to_atlas: np.ndarray,
                  slice_mm: float) -> np.ndarray:
    """Resample an atlas-grid image onto `native`, averaging across each slice's thickness."""
    import SimpleITK as sitk

    sub = max(1, int(round(slice_mm / min(atlas.spacing))))
    affine = native.affine.copy()
    step = native.affine[:3, 2] / sub
    affine[:3, 2] = step
    affine[:3, 3] = native.affine[:3, 3] - step * (sub - 1) / 2
    fine = Grid((native.shape[0], native.shape[1], native.shape[2] * sub), affine)
    image = sitk.Resample(to_sitk(clean.astype(np.float32), atlas.affine), fine.reference(),
                          transform_from_ras(native_to_atlas), sitk.sitkLinear, 0.0)
    array = from_sitk(image)
    return array.reshape(native.shape[0], native.shape[1], native.shape[2], sub).mean(axis=-1)


def write_native_images(config, model, session: int, truth, atlas: Grid, stem: Path) -> None:
    """The four modalities in scanner space (NIfTI or DICOM) and the true transforms (json)."""
    rng = np.random.default_rng([config.seed, model.index, 3, session])
    head_centre = atlas.world((np.array(atlas.shape) - 1) / 2)
    pose = rigid(rng, 5.0, 8.0, head_centre)  # atlas mm -> scanner mm, this session
    transforms, reference = {}, None
    mask = None if config.skull else truth.brain_mask.astype(np.float32)
    for number, modality in enumerate(contrast.MODALITIES):
        protocol = protocol_for(modality, config.size)
        motion = rigid(rng, 1.0, 1.5, pose[:3, :3] @ head_centre + pose[:3, 3])
        atlas_to_scanner = motion @ pose
        native_to_atlas = np.linalg.inv(atlas_to_scanner)
        grid = native_grid(protocol, atlas_to_scanner[:3, :3] @ head_centre
                           + atlas_to_scanner[:3, 3], rng)
        clean = contrast.clean_image(modality, model.contrast, truth.fractions)
        native_clean = sample_native(clean, atlas, grid, native_to_atlas, protocol.slice_mm)
        native_mask = None if mask is None else (
            sample_native(mask, atlas, grid, native_to_atlas, protocol.slice_mm) >= 0.5)
        scan_rng = np.random.default_rng([config.seed, model.index, 1, session, number])
        white = contrast.signal(modality, model.contrast, "wm")
        image = contrast.acquire(native_clean, grid, white, contrast.sample_scanner(scan_rng),
                                 scan_rng, native_mask)
        volume = Volume(image, grid.affine)
        if config.dicom:
            from tumorcli.io.dicom import write_dicom_series

            written = write_dicom_series(
                volume, Path(f"{stem}-{modality}"), reference=reference,
                series_description=f"{modality} {protocol.plane} {protocol.in_plane_mm:g}x"
                f"{protocol.in_plane_mm:g}x{protocol.slice_mm:g}mm", series_number=number + 1)
            reference = reference or Path(f"{stem}-{modality}")
            file = f"{Path(stem).name}-{modality}/ ({len(written)} DICOM files)"
        else:
            save_volume(volume, f"{stem}-{modality}.nii.gz")
            file = f"{Path(stem).name}-{modality}.nii.gz"
        transforms[modality] = {
            "file": file, "plane": protocol.plane, "shape": list(grid.shape),
            "spacing_mm": list(grid.spacing), "native_affine": grid.affine.tolist(),
            "native_to_atlas_world": native_to_atlas.tolist(),
            "native_voxel_to_atlas_voxel": (np.linalg.inv(atlas.affine) @ native_to_atlas
                                            @ grid.affine).tolist()}
    content = {"atlas_affine": atlas.affine.tolist(), "atlas_shape": list(atlas.shape),
               "seg_space": "atlas", "convention": "RAS mm; x_atlas = native_to_atlas_world @ "
               "x_native; voxel maps use the written NIfTI's voxel order", "modalities": transforms}
    with atomic_file(Path(f"{stem}-transforms.json")) as temporary:
        temporary.write_text(json.dumps(content, indent=2) + "\n")


def posed_scan(clean: np.ndarray, atlas: Grid, pose_deg_mm: tuple, slice_mm: float,
               pixel_mm: float, white_matter_signal: float, rng: np.random.Generator,
               slab_fraction: float = 1.0,
               slab_centre_mm: float = 0.0) -> tuple[Volume, np.ndarray]:
    """One axial series of an atlas-grid image in a chosen pose, for registration tests.

    pose_deg_mm: (rx, ry, rz) degrees about the head centre and (tx, ty, tz) mm, atlas mm ->
    scanner mm; slice_mm: slice thickness (box profile); slab_fraction: the share of the
    head's 180 mm superior–inferior extent covered, centred `slab_centre_mm` above its centre.
    Returns the scan and its native_to_atlas_world (4×4 RAS mm).
    """
    centre = atlas.world((np.array(atlas.shape) - 1) / 2)
    pose = np.eye(4)
    pose[:3, :3] = rotation_matrix(np.radians(pose_deg_mm[:3]))
    pose[:3, 3] = centre - pose[:3, :3] @ centre + np.asarray(pose_deg_mm[3:], float)
    slices = max(4, int(round(180.0 * slab_fraction / slice_mm)))
    matrix = int(round(220.0 / pixel_mm))
    linear = PLANES["axial"] * np.array([pixel_mm, pixel_mm, slice_mm])
    shape = np.array([matrix, matrix, slices])
    affine = np.eye(4)
    affine[:3, :3] = linear
    # the scanner centres its field of view on the head as placed (plus the slab offset)
    affine[:3, 3] = centre + [0.0, 0.0, slab_centre_mm] - linear @ ((shape - 1) / 2)
    grid = Grid(tuple(int(n) for n in shape), affine)
    native_to_atlas = np.linalg.inv(pose)
    native_clean = sample_native(clean, atlas, grid, native_to_atlas, slice_mm)
    image = contrast.acquire(native_clean, grid, white_matter_signal,
                             contrast.sample_scanner(rng), rng)
    return Volume(image, grid.affine), native_to_atlas


def random_pose(rng: np.random.Generator, max_rotation_deg: float = 20.0,
                max_shift_mm: float = 30.0) -> tuple[float, ...]:
    """(rx, ry, rz) degrees and (tx, ty, tz) mm, each uniform within ± the limits."""
    return tuple(float(v) for v in np.concatenate([
        rng.uniform(-max_rotation_deg, max_rotation_deg, 3),
        rng.uniform(-max_shift_mm, max_shift_mm, 3)]))


def pose_cases(count: int, seed: int, slab_centre_mm: float = 30.0,
               modalities: tuple[str, ...] = ("t2w", "t2f", "t1n")) -> list[dict]:
    """`count` seeded hard cases for co-registration: modality (in turn), pose (random_pose),
    slice thickness 1–6 mm and, every 4th case, a slab covering 60 % of the head whose centre
    is moved by up to ± slab_centre_mm."""
    rng = np.random.default_rng(seed)
    cases = []
    for number in range(count):
        slab = 0.6 if number % 4 == 3 else 1.0
        cases.append({"modality": modalities[number % len(modalities)],
                      "pose": random_pose(rng),
                      "slice_mm": float(rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
                      "slab": slab,
                      "slab_centre_mm": float(rng.uniform(-slab_centre_mm, slab_centre_mm))
                      * (slab < 1)})
    return cases
