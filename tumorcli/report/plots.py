"""The report's figures as PNG bytes (matplotlib, Agg, no pyplot state).

Overlays: three planes through the whole tumour's centroid (the grid's centre without tumour),
in radiological convention: the patient's right on the image's left, anterior up in axial
planes, superior up in the others, anterior on the left in sagittal planes; the voxels are shown
after an exact reorientation to RAS (no resampling), each plane with its true aspect ratio.
"""

from __future__ import annotations

import io

import numpy as np

from tumorcli.io.volume import Volume

LABEL_COLOURS = {1: ("NETC (necrosis)", (220, 40, 40)), 2: ("SNFH (oedema)", (40, 200, 60)),
                 3: ("ET (enhancing)", (250, 220, 40))}
LABEL_ALPHA = 0.65
PLANES = ("axial", "coronal", "sagittal")
REGION_STYLE = {"WT": ("#2b6cb0", "-"), "TC": ("#c05621", "-"), "ET": ("#b7950b", "-"),
                "SNFH": ("#2f855a", "--"), "NETC": ("#c53030", "--")}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, facecolor="white")
    return buffer.getvalue()


def _window(array: np.ndarray) -> tuple[float, float]:
    inside = array[array != 0]
    if inside.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(inside, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-6))


def _planes(array: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices of an RAS array through `centre`, ready for imshow:
    rows from superior/anterior down, columns from the patient's right (radiological)."""
    i, j, k = centre
    return [array[:, :, k].T[::-1, ::-1], array[:, j, :].T[::-1, ::-1],
            array[i, :, :].T[::-1, ::-1]]


def _aspects(spacing) -> list[float]:
    sx, sy, sz = spacing
    return [sy / sx, sz / sx, sz / sy]  # row spacing / column spacing per plane


def tumour_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the whole tumour's centroid (grid centre without tumour)."""
    index = np.argwhere(labels > 0)
    if index.size == 0:
        return tuple(int(n // 2) for n in labels.shape)
    return tuple(int(round(c)) for c in index.mean(axis=0))


def overlay_figure(labels: Volume, background: Volume | None, title: str,
                   post: Volume | None = None, uncertainty: Volume | None = None) -> bytes:
    """PNG: labels (canonical 1 NETC, 2 SNFH, 3 ET) over the background scan in three planes,
    with a colour legend; a row for the predicted image and one for the uncertainty map when
    given (all on the labels' grid)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ras = labels.reoriented("RAS")
    centre = tumour_centre(ras.array)
    aspects = _aspects(ras.spacing)
    rows = [("labels", background)] + ([("post", post)] if post is not None else []) \
        + ([("uncertainty", uncertainty)] if uncertainty is not None else [])
    figure = Figure(figsize=(9.6, 3.3 * len(rows) + 0.5))
    grid = figure.subplots(len(rows), 3, squeeze=False)
    base = None if background is None else background.reoriented("RAS").array.astype(np.float32)
    for row, (kind, image) in enumerate(rows):
        shown = None if image is None else image.reoriented("RAS").array.astype(np.float32)
        grey = base if kind == "uncertainty" else shown
        low, high = _window(grey) if grey is not None else (0.0, 1.0)
        for column, plane in enumerate(PLANES):
            axes = grid[row][column]
            axes.set_axis_off()
            if grey is not None:
                axes.imshow(_planes(grey, centre)[column], cmap="gray", vmin=low, vmax=high,
                            aspect=aspects[column], interpolation="nearest")
            else:
                axes.imshow(np.zeros_like(_planes(ras.array, centre)[column], float),
                            cmap="gray", vmin=0, vmax=1, aspect=aspects[column])
            if kind == "labels":
                axes.imshow(_label_rgba(_planes(ras.array, centre)[column]),
                            aspect=aspects[column], interpolation="nearest")
            elif kind == "uncertainty":
                heat = np.ma.masked_less_equal(_planes(shown, centre)[column], 0)
                top = float(max(shown.max(), 1e-6))
                shown_map = axes.imshow(heat, cmap="magma", vmin=0, vmax=top,
                                        aspect=aspects[column], interpolation="nearest",
                                        alpha=0.85)
            _markers(axes, plane)
            name = {"labels": "labels", "post": "predicted", "uncertainty": "uncertainty"}[kind]
            axes.set_title(f"{plane} · {name}", fontsize=9)
        if kind == "uncertainty":  # a bar beside the last plane, so the planes keep their size
            bar = grid[row][-1].inset_axes([1.02, 0.1, 0.025, 0.8])
            figure.colorbar(shown_map, cax=bar, label="uncertainty")
    legend = [Patch(color=np.array(rgb) / 255, label=name)
              for name, rgb in LABEL_COLOURS.values()]
    figure.legend(handles=legend, loc="lower center", ncol=3, frameon=False, fontsize=9)
    figure.suptitle(title, fontsize=11)
    one_row = len(rows) == 1
    figure.subplots_adjust(left=0.01, right=0.93 if uncertainty is not None else 0.99,
                           top=0.9 if one_row else 0.95, bottom=0.1 if one_row else 0.05,
                           wspace=0.03, hspace=0.12)
    return _png(figure)


def _label_rgba(plane: np.ndarray) -> np.ndarray:
    rgba = np.zeros((*plane.shape, 4), np.float32)
    for value, (_, rgb) in LABEL_COLOURS.items():
        rgba[plane == value] = (*(np.array(rgb) / 255.0), LABEL_ALPHA)
    return rgba


def _markers(axes, plane: str) -> None:
    left, right = ("A", "P") if plane == "sagittal" else ("R", "L")
    style = {"color": "white", "fontsize": 9, "fontweight": "bold",
             "transform": axes.transAxes, "va": "center"}
    axes.text(0.02, 0.5, left, ha="left", **style)
    axes.text(0.98, 0.5, right, ha="right", **style)


def course_figure(sessions: list[dict]) -> bytes:
    """PNG: volumes (cm³) of every region over days (over session numbers without days).
    sessions: dicts with "session", "day", "volumes_cm3", "response"."""
    from matplotlib.figure import Figure

    have_days = all(s["day"] is not None for s in sessions)
    x = [s["day"] if have_days else s["session"] for s in sessions]
    figure = Figure(figsize=(7.2, 3.4))
    axes = figure.subplots()
    for region, (colour, line) in REGION_STYLE.items():
        axes.plot(x, [s["volumes_cm3"][region] for s in sessions], line, color=colour,
                  marker="o", label=f"{region}", linewidth=1.8)
    for position, session in zip(x, sessions):
        if session["response"] != "baseline":
            axes.annotate(session["response"], (position, session["volumes_cm3"]["WT"]),
                          textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    axes.set_xlabel("day" if have_days else "session")
    axes.set_ylabel("volume (cm³)")
    axes.set_xticks(x)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                frameon=False)
    figure.subplots_adjust(left=0.1, right=0.98, top=0.95, bottom=0.3)
    return _png(figure)
