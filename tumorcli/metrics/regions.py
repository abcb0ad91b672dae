"""Tumour labels and the regions built from them (BraTS 2023 naming).

A label mask holds one integer per voxel: 0 background, then one value per tissue class
(default 1 NETC, 2 SNFH, 3 ET). Regions are unions of classes:

    NETC, SNFH, ET   each class on its own
    TC  tumour core  = NETC ∪ ET
    WT  whole tumour = NETC ∪ SNFH ∪ ET

Counting is one vectorised compare-and-count per label value (see `label_counts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorcli.errors import BadInput

CLASSES = ("NETC", "SNFH", "ET")
ALIASES = {"NCR": "NETC", "NET": "NETC", "ED": "SNFH", "OEDEMA": "SNFH", "EDEMA": "SNFH"}
REGIONS = {
    "NETC": ("NETC",),
    "SNFH": ("SNFH",),
    "ET": ("ET",),
    "TC": ("NETC", "ET"),
    "WT": ("NETC", "SNFH", "ET"),
}
EVALUATED_REGIONS = ("TC", "WT", "ET")
DEFAULT_LABELS = "1=NETC,2=SNFH,3=ET"


@dataclass(frozen=True)
class LabelScheme:
    """Which mask value means which tissue class, e.g. {1: "NETC", 2: "SNFH", 3: "ET"}."""

    classes: tuple[tuple[int, str], ...]

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(value for value, _ in self.classes)

    def region_values(self, region: str) -> tuple[int, ...]:
        """Mask values that belong to `region` (NETC, SNFH, ET, TC or WT)."""
        members = REGIONS[region]
        return tuple(value for value, name in self.classes if name in members)

    def region_lookup(self, region: str, max_value: int) -> np.ndarray:
        """(max_value + 1,) bool: lookup[v] is True where mask value v lies in `region`."""
        lookup = np.zeros(max_value + 1, dtype=bool)
        for value in self.region_values(region):
            if value <= max_value:
                lookup[value] = True
        return lookup

    def describe(self) -> str:
        return ",".join(f"{value}={name}" for value, name in self.classes)


def parse_labels(text: str = DEFAULT_LABELS) -> LabelScheme:
    """Parse `--labels 1=NETC,2=SNFH,3=ET` (aliases NCR→NETC, ED→SNFH; 4=ET for BraTS 2021)."""
    classes: dict[int, str] = {}
    for item in (part.strip() for part in text.split(",")):
        value, _, name = item.partition("=")
        name = ALIASES.get(name.strip().upper(), name.strip().upper())
        if not value.strip().isdigit() or int(value) == 0 or name not in CLASSES:
            raise BadInput(f"--labels {text}: '{item}' is not VALUE=CLASS",
                           "use positive values and the classes NETC, SNFH, ET, e.g. "
                           f"{DEFAULT_LABELS}")
        if int(value) in classes:
            raise BadInput(f"--labels {text}: value {int(value)} is given twice",
                           "give each mask value one class")
        classes[int(value)] = name
    return LabelScheme(tuple(sorted(classes.items())))


def as_label_array(array: np.ndarray, source: str) -> np.ndarray:
    """The mask as integers; BadInput naming `source` for probability maps (non-integer values).

    `label_counts` then checks for negative values and values the label scheme does not name.
    """
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating):
            raise BadInput(f"{source}: voxels of type {array.dtype} are not a label mask",
                           "save the mask with integer labels")
        tumour = array[array != 0]  # the check runs on the few tumour voxels only
        if not np.all(np.isfinite(tumour)) or np.any(tumour != np.round(tumour)):
            raise BadInput(f"{source}: not a label mask (found non-integer values)",
                           "threshold or argmax probability maps before measuring them")
        array = array.astype(np.int32)
    return array


def label_counts(labels: np.ndarray, source: str, scheme: LabelScheme) -> np.ndarray:
    """Voxels per mask value: counts[v] = number of voxels equal to v (counts[0] left at 0).

    labels: integer mask from `as_label_array`. Raises BadInput naming `source` for negative or
    unknown values. One vectorised compare-and-count per label value plus one non-zero count:
    on a 240×240×155 uint8 mask that is ~3 ms, where `np.bincount` of the array takes ~36 ms
    (it widens every voxel to int64 first).
    """
    counts = np.zeros(max(scheme.values) + 1, dtype=np.int64)
    for value in scheme.values:
        counts[value] = np.count_nonzero(labels == value)
    if counts.sum() != np.count_nonzero(labels):  # rare: find out which values are foreign
        foreign = np.unique(labels[(labels != 0) & ~np.isin(labels, scheme.values)])
        if foreign.min() < 0:
            raise BadInput(f"{source}: not a label mask (found negative values)",
                           "labels must be whole numbers ≥ 0")
        found = ",".join(str(int(v)) for v in foreign[:5])
        raise BadInput(f"{source}: holds label value(s) {found} that --labels "
                       f"{scheme.describe()} does not name",
                       "name them with --labels, e.g. 1=NETC,2=SNFH,4=ET for BraTS 2021 masks")
    return counts


def region_voxels(counts: np.ndarray, scheme: LabelScheme) -> dict[str, int]:
    """Voxels in each region (NETC, SNFH, ET, TC, WT) from `label_counts`."""
    return {region: int(sum(counts[value] for value in scheme.region_values(region)))
            for region in REGIONS}
