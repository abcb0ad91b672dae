"""Post-processing of BraTS labels: small predicted regions are relabelled (nnU-Net's BraTS
recipe, Isensee et al. 2020). BraTS scores an empty reference region against any non-empty
prediction as Dice 0 and HD95 373 mm, and post-operative follow-ups often have no enhancing
tumour or no tumour core at all, so a few stray ET voxels cost a whole session's score:

- predicted ET smaller than `min_et_cm3` in all becomes NETC (it stays tumour core);
- then a predicted tumour core (NETC ∪ ET) smaller than `min_tc_cm3` becomes SNFH (it stays
  whole tumour).

The thresholds are chosen on sessions the model did not train on, its val split or an unseen
cohort (`tune_small_regions` in train/postprocess.py, run by `tumor train segment` and
`tumor train postprocess`), and kept in its config.json under "postprocess"; 0 means off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NETC, SNFH, ET = 1, 2, 3


@dataclass(frozen=True)
class SmallRegionRule:
    min_et_cm3: float = 0.0
    min_tc_cm3: float = 0.0

    @property
    def active(self) -> bool:
        return self.min_et_cm3 > 0 or self.min_tc_cm3 > 0

    def apply(self, labels: np.ndarray, voxel_cm3: float) -> np.ndarray:
        """BraTS labels (any shape) and one voxel's volume in cm³ -> relabelled copy (or the
        same array when nothing changes)."""
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
        parts = ([f"ET < {self.min_et_cm3:g} cm³ → NETC"] if self.min_et_cm3 > 0 else []) + \
            ([f"TC < {self.min_tc_cm3:g} cm³ → SNFH"] if self.min_tc_cm3 > 0 else [])
        return ", then ".join(parts) or "none"

    def to_dict(self) -> dict:
        return {"rule": "small-regions", **asdict(self)}

    @staticmethod
    def of_model(config: dict, enabled: bool = True) -> "SmallRegionRule":
        """A model's rule from its config.json contents (off when it has none or not enabled)."""
        return SmallRegionRule.from_dict(config.get("postprocess")) if enabled \
            else SmallRegionRule()

    @staticmethod
    def from_dict(data: dict | None) -> "SmallRegionRule":
        data = data or {}
        return SmallRegionRule(float(data.get("min_et_cm3", 0.0)),
                               float(data.get("min_tc_cm3", 0.0)))

