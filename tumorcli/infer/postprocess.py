"""Post-processing of BraTS labels: stray tumour components are removed, then small predicted
regions are relabelled (nnU-Net's BraTS recipe, Isensee et al. 2020).

Stray components: a scanner bias hot spot or a flow artefact can look like oedema far from the
tumour. A connected component of the predicted tumour (26-connected) smaller than
`max_stray_fraction` of the largest one and farther than `min_stray_distance_mm` from it
(surface to surface) becomes background. A real second focus is usually large or close, so it
stays; 0 means off.

Small regions: BraTS scores an empty reference region against any non-empty
prediction as Dice 0 and HD95 373 mm, and post-operative follow-ups often have no enhancing
tumour or no tumour core at all, so a few stray ET voxels cost a whole session's score:

- predicted ET smaller than `min_et_cm3` in all becomes NETC (it stays tumour core);
- then a predicted tumour core (NETC ∪ ET) smaller than `min_tc_cm3` becomes SNFH (it stays
  whole tumour).

All thresholds are chosen on sessions the model did not train on, its val split or an unseen
cohort (`tune_small_regions` in train/postprocess.py, run by `tumor train segment` and
`tumor train postprocess`), and kept in its config.json under "postprocess"; 0 means off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NETC, SNFH, ET = 1, 2, 3


@dataclass(frozen=True)
class LabelRule:
    min_et_cm3: float = 0.0
    min_tc_cm3: float = 0.0
    max_stray_fraction: float = 0.0       # of the largest component's volume
    min_stray_distance_mm: float = 0.0

    @property
    def active(self) -> bool:
        return self.min_et_cm3 > 0 or self.min_tc_cm3 > 0 or self.max_stray_fraction > 0

    def apply(self, labels: np.ndarray, voxel_cm3: float,
              spacing_mm: tuple[float, float, float] | None = None) -> np.ndarray:
        """BraTS labels (X, Y, Z), one voxel's volume in cm³ and the voxel size (mm; default
        isotropic from the volume) -> relabelled copy (or the same array when nothing changes)."""
        if spacing_mm is None:
            spacing_mm = (float(np.cbrt(voxel_cm3 * 1000.0)),) * 3
        out = self.without_strays(labels, spacing_mm)
        return self.small_regions(out, voxel_cm3)

    def without_strays(self, labels: np.ndarray, spacing_mm) -> np.ndarray:
        """Components small next to the largest and far from it set to 0 (copy if any)."""
        if self.max_stray_fraction <= 0 or not labels.any():
            return labels
        from scipy import ndimage

        components, count = ndimage.label(labels > 0, np.ones((3, 3, 3), bool))
        if count < 2:
            return labels
        sizes = np.bincount(components.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        small = [i + 1 for i, size in enumerate(sizes)
                 if i + 1 != largest and size < self.max_stray_fraction * sizes[largest - 1]]
        if not small:
            return labels
        distance = ndimage.distance_transform_edt(components != largest, sampling=spacing_mm)
        nearest = ndimage.minimum(distance, components, small)
        drop = [index for index, gap in zip(small, np.atleast_1d(nearest))
                if gap > self.min_stray_distance_mm]
        if not drop:
            return labels
        out = labels.copy()
        out[np.isin(components, drop)] = 0
        return out

    def small_regions(self, labels: np.ndarray, voxel_cm3: float) -> np.ndarray:
        out = labels
        enhancing = labels == ET
        if enhancing.any() and enhancing.sum() * voxel_cm3 < self.min_et_cm3:
            out = out.copy()
            out[enhancing] = NETC
        if self.min_tc_cm3 <= 0:
            return out
        core = (out == NETC) | (out == ET)
        if core.any() and core.sum() * voxel_cm3 < self.min_tc_cm3:
            out = out.copy() if out is labels else out
            out[core] = SNFH
        return out

    def describe(self) -> str:
        parts = ([f"components under {self.max_stray_fraction:g} × the largest and over "
                  f"{self.min_stray_distance_mm:g} mm from it → background"]
                 if self.max_stray_fraction > 0 else []) + \
            ([f"ET < {self.min_et_cm3:g} cm³ → NETC"] if self.min_et_cm3 > 0 else []) + \
            ([f"TC < {self.min_tc_cm3:g} cm³ → SNFH"] if self.min_tc_cm3 > 0 else [])
        return ", then ".join(parts) or "none"

    def to_dict(self) -> dict:
        return {"rule": "strays+small-regions", **asdict(self)}

    @staticmethod
    def of_model(config: dict, enabled: bool = True) -> "LabelRule":
        """A model's rule from its config.json contents (off when it has none or not enabled)."""
        return LabelRule.from_dict(config.get("postprocess")) if enabled \
            else LabelRule()

    @staticmethod
    def from_dict(data: dict | None) -> "LabelRule":
        data = data or {}
        return LabelRule(float(data.get("min_et_cm3", 0.0)), float(data.get("min_tc_cm3", 0.0)),
                         float(data.get("max_stray_fraction", 0.0)),
                         float(data.get("min_stray_distance_mm", 0.0)))

