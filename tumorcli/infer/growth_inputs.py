"""What the growth net sees: a patient's sessions on the model grid, t1n/t1c/t2f in tissue units
and the whole-tumour masks, as axial slices; shared by training (train/growth_data) and
`tumor predict-growth`.

Every modality of every session is divided by its median over normal tissue (brain, tumour of
any session grown by 6 mm excluded), and every session but the reference is divided by the
smooth field by which it differs from the reference there (preprocess/harmonise): all sessions
then share the reference's scanner conditions, so what differs between them is the disease.
At inference the reference is the last source session, so the prediction comes out in its
conditions, as the identity baseline does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorcli.errors import BadInput
from tumorcli.infer.post_inputs import volume_slices
from tumorcli.infer.prepare import Prepared, onto_grid, prepare
from tumorcli.io.itk import Grid
from tumorcli.io.volume import Volume
from tumorcli.nets.growth import MODALITIES
from tumorcli.preprocess.harmonise import normal_tissue, relative_bias, tissue_median_scale


@dataclass
class SessionStack:
    """Sessions of one patient on the model grid: images (S, 3, X, Y, Z) float32 in tissue
    units, masks (S, X, Y, Z) float32 in {0, 1}, brain (X, Y, Z) of the reference, the
    tissue-median scale of each (session, modality), and the grids."""

    images: np.ndarray
    masks: np.ndarray
    brain: np.ndarray
    scales: np.ndarray
    reference: Prepared

    @property
    def keep(self) -> np.ndarray:
        """Axial positions with brain."""
        return self.brain.any(axis=(0, 1))

    def slices(self, multiple: int) -> tuple[np.ndarray, np.ndarray]:
        """(S, K, 3, H, W) images and (S, K, 1, H, W) masks of the kept axial slices."""
        keep = self.keep
        images = np.stack([np.concatenate([volume_slices(session[c], keep, multiple)
                                           for c in range(len(MODALITIES))], 1)
                           for session in self.images])
        masks = np.stack([volume_slices(mask, keep, multiple) for mask in self.masks])
        return images, masks


def stack_sessions(sessions: list[dict[str, Volume]], masks: list[Volume], spacing_mm: float,
                   reference: int = -1) -> SessionStack:
    """Sessions (each modality → Volume, all on one grid) and their label masks → SessionStack
    harmonised to session `reference`. BadInput when a session is on another grid."""
    prepared = [prepare(session, MODALITIES, spacing_mm) for session in sessions]
    first, first_name = prepared[0], _name(sessions[0])
    for session, item in zip(sessions[1:], prepared[1:]):
        grid = item.source_grid
        if grid.shape != first.source_grid.shape or not np.allclose(
                grid.affine, first.source_grid.affine, atol=1e-3):
            raise BadInput(f"{_name(session)}: not on the grid of {first_name} ({grid.shape} vs "
                           f"{first.source_grid.shape} voxels or another position)",
                           "put the sessions on one grid first: tumor preprocess (atlas space)")
    tumours = []
    for mask in masks:
        if mask.shape[:3] != first.source_grid.shape or not np.allclose(
                mask.affine, first.source_grid.affine, atol=1e-3):
            raise BadInput(f"{mask.source}: the mask is not on the grid of its session",
                           "segment the same scans (tumor segment) or run tumor preprocess")
        tumours.append(onto_grid((np.asarray(mask.array) > 0).astype(np.float32),
                                 Grid.of(mask), first.grid, blur=False))
    ref = prepared[reference]
    spacing = ref.grid.spacing
    normal = normal_tissue(np.logical_and.reduce([p.brain for p in prepared]),
                           np.max(tumours, axis=0), spacing)
    images = np.zeros((len(prepared), len(MODALITIES), *ref.grid.shape), np.float32)
    scales = np.ones((len(prepared), len(MODALITIES)), np.float32)
    for s, item in enumerate(prepared):
        for c in range(len(MODALITIES)):
            raw = np.where(item.brain, item.image[c] * item.sds[c] + item.means[c], 0)
            scales[s, c] = tissue_median_scale(raw, normal)
            images[s, c] = raw / scales[s, c]
    order = [s for s in range(len(prepared)) if s != reference % len(prepared)]
    for s in order:
        for c in range(len(MODALITIES)):
            field = relative_bias(images[s, c], images[reference, c], normal, spacing)
            images[s, c] = np.where(prepared[s].brain, images[s, c] / field, 0)
    return SessionStack(images, np.stack(tumours).astype(np.float32), ref.brain, scales, ref)


def read_session(folder: Path) -> tuple[dict[str, Volume], Volume | None]:
    """A BraTS session folder's t1n, t1c, t2f and its *-seg mask (None when it has none)."""
    from tumorcli.io.volume import load_volume
    from tumorcli.preprocess.inputs import find_subject, read_scan

    subject = find_subject(folder)
    missing = [m for m in MODALITIES if m not in subject.images]
    if missing:
        raise BadInput(f"{folder}: no {', '.join(missing)} image", "a session needs "
                       + ", ".join(MODALITIES) + " (BraTS naming, e.g. CASE-t1c.nii.gz)")
    masks = sorted(p for p in Path(folder).iterdir()
                   if p.name.endswith(("seg.nii.gz", "seg.nii")))
    images = {m: read_scan(subject.images[m], m) for m in MODALITIES}
    return images, (load_volume(masks[0]) if masks else None)


def _name(session: dict[str, Volume]) -> str:
    volume = next(iter(session.values()))
    return str(Path(volume.source).parent) if volume.source else "a session"
