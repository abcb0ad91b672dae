"""A PNG montage of synthetic sessions: the four modalities and the labels over T1c.

Rows are sessions, columns t1n, t1c, t2w, t2f and T1c with labels (NETC red, SNFH green,
ET yellow); one axial slice through the largest tumour cross-section of the first session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tumorcli.io.atomic import atomic_file
from tumorcli.io.volume import load_volume

LABEL_COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 3: (250, 220, 40)}


def _window(slice_: np.ndarray) -> np.ndarray:
    inside = slice_[slice_ > 0]
    high = np.percentile(inside, 99.5) if inside.size else 1.0
    return np.clip(slice_ / max(high, 1e-6) * 255, 0, 255).astype(np.uint8)


def _axial(array: np.ndarray, k: int) -> np.ndarray:
    # BraTS grid: i runs to the patient's left, j to posterior; show radiological convention.
    return np.ascontiguousarray(array[:, :, k].T)


def _caption(picture, row_names: list[str]) -> None:
    """Column names along the top, the session name at the start of each row."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)
    tile_width, tile_height = picture.width // 5, picture.height // len(row_names)
    for column, name in enumerate(("t1n", "t1c", "t2w", "t2f", "t1c + labels")):
        draw.text((column * tile_width + 6, 4), name, fill=(255, 255, 255))
    for row, name in enumerate(row_names):
        draw.text((6, (row + 1) * tile_height - 16), name, fill=(200, 200, 200))


def session_montage(session_folders: list[Path], out_png: Path,
                    slice_index: int | None = None) -> Path:
    """Write a montage of `session_folders` (BraTS layout) to `out_png`; returns the path."""
    from PIL import Image

    rows = []
    for row, folder in enumerate(session_folders):
        name = folder.name
        seg = np.asarray(load_volume(folder / f"{name}-seg.nii.gz").array)
        if slice_index is None:
            area = ((seg == 1) | (seg == 3)).sum(axis=(0, 1)) + 0.01 * (seg > 0).sum(axis=(0, 1))
            slice_index = int(np.argmax(area))
        tiles = []
        for modality in ("t1n", "t1c", "t2w", "t2f"):
            image = np.asarray(load_volume(folder / f"{name}-{modality}.nii.gz").array, float)
            tiles.append(np.repeat(_window(_axial(image, slice_index))[..., None], 3, axis=-1))
        overlay = tiles[1].astype(np.float32).copy()
        labels = _axial(seg, slice_index)
        for label, colour in LABEL_COLOURS.items():
            overlay[labels == label] = 0.45 * overlay[labels == label] + 0.55 * np.array(colour)
        tiles.append(overlay.astype(np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
    picture = Image.fromarray(np.concatenate(rows, axis=0))
    if picture.width < 1000:
        picture = picture.resize((picture.width * 2, picture.height * 2), Image.NEAREST)
    _caption(picture, [folder.name for folder in session_folders])
    with atomic_file(out_png) as temporary:
        picture.save(temporary, format="PNG")
    return out_png
