"""The weights in models/ load offline, are fp16 safetensors with a card, and do their job on a
sample patient they never saw (decimated to 2 mm so the test stays fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tumorcli.io.volume import Volume, load_volume

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(p for p in (ROOT / "models").iterdir() if p.is_dir())
SAMPLE = ROOT / "sample_data" / "atlas"


def decimated(path: Path) -> Volume:
    """Every second voxel: the 1 mm sample as a 2 mm scan (same world extent)."""
    volume = load_volume(path)
    affine = volume.affine.copy()
    affine[:3, :3] *= 2
    return Volume(np.ascontiguousarray(np.asarray(volume.array)[::2, ::2, ::2]), affine,
                  source=volume.source)


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_every_shipped_model_is_fp16_safetensors_with_a_config_and_a_card(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] in {"segmentation", "predict-post", "refiner", "growth"}
    assert "Held-out" in (folder / "card.md").read_text()
    weights = sorted(folder.glob("*.safetensors"))
    assert weights
    for path in weights:
        floats = {t.dtype for t in load_file(str(path)).values() if t.is_floating_point()}
        assert floats == {torch.float16}, path


@pytest.mark.parametrize("name", ["seg-resunet", "seg-swinunetr"])
def test_each_shipped_segmenter_finds_the_tumour_of_a_sample_patient(name):
    from tumorcli.infer.segment import Segmenter, find_model_folder, segment_volumes

    case = SAMPLE / "BraTS-GLI-00002-000"
    segmenter = Segmenter.load(find_model_folder(str(ROOT / "models" / name)),
                               torch.device("cpu"))
    volumes = {m: decimated(case / f"{case.name}-{m}.nii.gz") for m in segmenter.config.modalities}
    labels = segment_volumes(segmenter, volumes).labels.array > 0
    truth = np.asarray(decimated(case / f"{case.name}-seg.nii.gz").array) > 0
    assert 2 * (labels & truth).sum() / (labels.sum() + truth.sum()) > 0.85


REFINERS = [p for p in MODELS if p.name.startswith("refine-")]


@pytest.mark.parametrize("folder", REFINERS, ids=[p.name for p in REFINERS])
def test_the_shipped_refiners_refine_a_sample_patient_without_losing_the_tumour(folder):
    from tumorcli.infer.refine import RefineOptions, Refiner
    from tumorcli.infer.segment import Segmenter, find_model_folder, segment_volumes

    case = SAMPLE / "BraTS-GLI-00002-000"
    cpu = torch.device("cpu")
    segmenter = Segmenter.load(find_model_folder(str(ROOT / "models" / "seg-resunet")), cpu)
    refiner = Refiner.load(folder, cpu)
    tuned = json.loads((folder / "config.json").read_text())["postprocess"]   # its own rule
    assert tuned["sessions"] >= 10 and any(words in tuned["tuned_on"]
                                           for words in ("val session", "a cohort it never saw"))
    refiner.check_prior(segmenter.config, ROOT / "models" / "seg-resunet")
    volumes = {m: decimated(case / f"{case.name}-{m}.nii.gz") for m in segmenter.config.modalities}
    truth = np.asarray(decimated(case / f"{case.name}-seg.nii.gz").array)
    options = RefineOptions(refiner, steps=10, seed=0)
    first = segment_volumes(segmenter, volumes, refine=options).labels.array
    again = segment_volumes(segmenter, volumes, refine=options).labels.array
    assert np.array_equal(first, again)                       # seeded
    for region in ((1, 3), (1, 2, 3)):                          # TC, WT
        found, real = np.isin(first, region), np.isin(truth, region)
        assert 2 * (found & real).sum() / (found.sum() + real.sum()) > 0.85, region


@pytest.mark.skipif(not (ROOT / "models" / "predict-post").is_dir(),
                    reason="no predict-post weights ship")
def test_the_shipped_predict_post_beats_post_equals_pre_around_a_sample_patients_tumour():
    """Sample patient 2 (short survivor, resected) at its first follow-up, at the default
    settings, seeded, scored after the normal-tissue match as `evaluate-image --normalize
    tissue` does."""
    from tumorcli.infer.predict_post import POSTERIOR_MEAN, PostPredictor
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.metrics.image_regions import region_scores, tissue_normalised

    pre_case, post_case = SAMPLE / "BraTS-GLI-00002-000", SAMPLE / "BraTS-GLI-00002-001"
    pre, mask, post, post_seg = (decimated(case / f"{case.name}-{kind}.nii.gz") for case, kind
                                 in ((pre_case, "t1c"), (pre_case, "seg"), (post_case, "t1c"),
                                     (post_case, "seg")))
    predictor = PostPredictor.load(find_model_folder("predict-post"), torch.device("cpu"))
    # the CLI's default (--method mean), not the predictor's 4 × 20-step samples
    first = predictor.predict(pre, mask, "short", seed=0, **POSTERIOR_MEAN).mean.array
    assert np.array_equal(first, predictor.predict(pre, mask, "short", seed=0,
                                                   **POSTERIOR_MEAN).mean.array)
    truth = np.asarray(post.array, np.float32)
    brain = truth > 0
    labels = (np.asarray(mask.array) > 0) | (np.asarray(post_seg.array) > 0)
    scores = {name: region_scores(tissue_normalised(image, brain, labels),
                                  tissue_normalised(truth, brain, labels), brain, labels)
              for name, image in (("model", first), ("identity", np.asarray(pre.array)))}
    assert scores["model"]["psnr_3d_tumour"] > scores["identity"]["psnr_3d_tumour"] + 3
    assert scores["model"]["psnr_3d_rest"] > scores["identity"]["psnr_3d_rest"] - 1


@pytest.mark.skipif(not (ROOT / "models" / "growth").is_dir(), reason="no growth weights ship")
def test_the_shipped_growth_model_beats_persistence_on_a_sample_patients_last_follow_up():
    """Sample patient 2's second follow-up (day 183) from its pre-op scan (repeated, as
    predict-growth does with two sessions) and first follow-up (day 108), seeded: the future
    mask overlaps the truth more than the last observed mask does, and away from the tumour the
    images stay those of the last session."""
    from scipy import ndimage

    from tumorcli.infer.predict_growth import GrowthPredictor
    from tumorcli.infer.segment import find_model_folder
    from tumorcli.nets.growth import MODALITIES

    def session(index: int):
        case = SAMPLE / f"BraTS-GLI-00002-{index:03d}"
        return ({m: decimated(case / f"{case.name}-{m}.nii.gz") for m in MODALITIES},
                decimated(case / f"{case.name}-seg.nii.gz"))

    (first, first_mask), (last, last_mask), (_, truth) = session(0), session(1), session(2)
    predictor = GrowthPredictor.load(find_model_folder("growth"), torch.device("cpu"))
    run = lambda: predictor.predict([first, first, last], [first_mask, first_mask, last_mask],
                                    [0, 0, 108], ["none", "none", "surgery+rt+tmz"], 183, "tmz")
    result = run()
    assert np.array_equal(result.mask.array, run().mask.array)   # seeded
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())
    future, observed = np.asarray(truth.array) > 0, np.asarray(last_mask.array) > 0
    assert dice(np.asarray(result.mask.array) > 0, future) > dice(observed, future)
    far = np.asarray(last["t1c"].array) > 0   # brain ≥ 20 mm from either tumour
    far &= ndimage.distance_transform_edt(~(observed | future), sampling=2) > 20
    change = np.abs(np.asarray(result.images["t1c"].array) - np.asarray(last["t1c"].array))[far]
    assert np.median(change) < 0.05 * np.median(np.asarray(last["t1c"].array)[far])
