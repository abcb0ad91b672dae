"""`tumor train predict-post` and `tumor predict-post` on a tiny cohort: both stages, resume,
outputs on the input grid and scale, determinism, guidance wiring, and one red line for bad input.

The tiny model learns nothing useful in a few steps; these tests pin the plumbing. Quality is
measured by benchmarks/predict_post_quality.py on held-out synthetic patients."""

from __future__ import annotations

import dataclasses

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seg_factory import write_cohort, write_post_cohort
from tumorcli.cli.app import app
from tumorcli.io.volume import load_volume

runner = CliRunner()
TINY = ["--ae-channels", "16,16,16", "--unet-channels", "16,32,32", "--batch-size", "4",
        "--checkpoint-every", "2", "--warmup", "1", "--lr", "1e-2", "--ema-decay", "0"]


@pytest.fixture(scope="module")
def post_cohort(tmp_path_factory) -> Path:
    return write_post_cohort(tmp_path_factory.mktemp("post_cohort"), patients=4)


@pytest.fixture(scope="module")
def post_model(post_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("post_models") / "tiny-post"
    result = runner.invoke(app, ["train", "predict-post", "--data", str(post_cohort), "-o",
                                 str(out), "--autoencoder-steps", "4", "--denoiser-steps", "4",
                                 *TINY, "--json"])
    assert result.exit_code == 0, result.output
    return out


def case_files(cohort: Path, patient: int = 1) -> tuple[Path, Path]:
    case = cohort / f"BraTS-GLI-{patient:05d}-000"
    return case / f"{case.name}-t1c.nii.gz", case / f"{case.name}-seg.nii.gz"


def predict(model: Path, pre: Path, mask: Path, out: Path, *args: str):
    return runner.invoke(app, ["predict-post", "--pre", str(pre), "--mask", str(mask), "-o",
                               str(out), "--model", str(model), *args])


def test_training_writes_both_stages_in_fp16_with_the_latent_scale(post_model):
    from safetensors.torch import load_file

    for name in ("autoencoder.safetensors", "denoiser.safetensors"):
        tensors = load_file(str(post_model / name))
        assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    config = json.loads((post_model / "config.json").read_text())
    assert config["kind"] == "predict-post" and config["latent_scale"] > 0
    assert config["latent_scale"] != 1.0   # set from the stage-1 latents
    stages = [row["stage"] for row in csv.DictReader(open(post_model / "train_log.csv"))]
    assert stages == ["autoencoder", "autoencoder", "denoiser", "denoiser"]


def test_a_run_stopped_after_stage_one_resumes_into_the_denoiser(post_cohort, tmp_path):
    out = tmp_path / "post"
    first = runner.invoke(app, ["train", "predict-post", "--data", str(post_cohort), "-o",
                                str(out), "--autoencoder-steps", "2", "--denoiser-steps", "2",
                                *TINY, "-q"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["train", "predict-post", "--data", str(post_cohort), "-o",
                                str(out), "--autoencoder-steps", "2", "--denoiser-steps", "4",
                                *TINY, "--resume", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["step"] == 4
    stages = [(row["stage"], row["step"]) for row in csv.DictReader(open(out / "train_log.csv"))]
    assert stages[-2:] == [("denoiser", "2"), ("denoiser", "4")]
    config = json.loads((out / "config.json").read_text())   # the card reads the steps here
    assert config["training"]["denoiser_steps"] == 4 and config["latent_scale"] != 1.0


def test_a_residual_model_adds_the_predicted_change_to_the_pre_latent(post_cohort, tmp_path,
                                                                      monkeypatch):
    from tumorcli.infer.predict_post import PostPredictor

    out = tmp_path / "residual"
    result = runner.invoke(app, ["train", "predict-post", "--data", str(post_cohort), "-o",
                                 str(out), "--autoencoder-steps", "4", "--denoiser-steps", "2",
                                 "--target", "residual", *TINY, "-q"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["target"] == "residual" and np.isfinite(config["target_scale"])
    assert config["target_scale"] > 0 and config["target_scale"] != 1.0
    # a denoiser that predicts no change must hand the decoder exactly the pre latents
    monkeypatch.setattr(PostPredictor, "_denoise",
                        lambda self, noise, *rest: torch.zeros_like(noise))
    predictor = PostPredictor.load(out, torch.device("cpu"))
    encoded, decoded = [], []
    encode, decode = predictor.autoencoder.encode, predictor.autoencoder.decode
    monkeypatch.setattr(predictor.autoencoder, "encode",
                        lambda x: encoded.append(encode(x)[0]) or (encoded[-1], None))
    monkeypatch.setattr(predictor.autoencoder, "decode",
                        lambda z: decoded.append(z) or decode(z))
    pre, mask = case_files(post_cohort)
    predictor.predict(load_volume(pre), load_volume(mask), "short", steps=2, samples=1,
                      detail=False)
    # the first decode is the prediction's (the second decodes the pre latent for its detail)
    assert torch.allclose(decoded[0], torch.cat(encoded), atol=1e-5)


def test_a_class_channel_model_sees_the_class_as_an_input_plane(post_cohort, post_model,
                                                               tmp_path):
    from tumorcli.infer.predict_post import PostPredictor

    out = tmp_path / "plane"   # on the tiny model's autoencoder: stage 1 is skipped
    result = runner.invoke(app, ["train", "predict-post", "--data", str(post_cohort), "-o",
                                 str(out), "--autoencoder-from", str(post_model),
                                 "--ae-channels", "32,64", "--denoiser-steps", "2",
                                 "--class-channel", "--balance-classes", "--tumour-slices",
                                 "0.7", "--tumour-weight", "4", *TINY, "-q"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["class_channel"] and config["training"]["balance_classes"]
    assert "--class-channel" in config["training"]["command"]
    assert config["autoencoder"] == json.loads((post_model / "config.json").read_text()
                                               )["autoencoder"]   # not --ae-channels 32,64
    ae = "autoencoder.safetensors"
    assert (out / ae).read_bytes() == (post_model / ae).read_bytes()
    stages = {row["stage"] for row in csv.DictReader(open(out / "train_log.csv"))}
    assert stages == {"denoiser"}
    predictor = PostPredictor.load(out, torch.device("cpu"))
    seen = []
    forward = predictor.denoiser.forward
    predictor.denoiser.forward = lambda x, *a, **k: seen.append(x) or forward(x, *a, **k)
    noise = torch.zeros(2, 4, 8, 8)
    condition = torch.zeros(2, 5, 8, 8)
    predictor.sample_latents(noise, condition, 1, guidance=3.0, steps=1, sampler="ddim")
    plane = seen[0][:, -1]   # unconditional half 0, then short = +1
    assert torch.all(plane[:2] == 0) and torch.all(plane[2:] == 1)


def test_draw_odds_balance_classes_and_favour_tumour_slices():
    from tumorcli.train.losses import slice_odds

    classes = torch.tensor([1, 1, 1, 1, 2, 2])
    mask = torch.zeros(6, 1, 4, 4)
    mask[0, 0, 1, 1] = mask[4, 0, 2, 2] = 1
    assert np.allclose(slice_odds(classes, mask, False, 0.0), 1 / 6)
    balanced = slice_odds(classes, mask, True, 0.0)
    assert np.isclose(balanced[:4].sum(), 0.5) and np.isclose(balanced[4:].sum(), 0.5)
    tumour = slice_odds(classes, mask, True, 0.5)
    assert np.isclose(tumour[0], 0.25) and np.isclose(tumour[4], 0.25)


def test_the_tumour_weighted_mse_is_the_mse_without_weight_and_favours_the_tumour():
    from tumorcli.train.losses import weighted_mse

    target, mask = torch.zeros(1, 1, 9, 9), torch.zeros(1, 1, 9, 9)
    mask[0, 0, 4, 4] = 1
    near, far = target.clone(), target.clone()
    near[0, 0, 4, 4], far[0, 0, 0, 0] = 1, 1
    assert torch.isclose(weighted_mse(near, target, mask, 0.0), near.pow(2).mean())
    assert weighted_mse(near, target, mask, 4.0) > weighted_mse(far, target, mask, 4.0)


def test_an_unknown_target_is_bad_input(post_cohort, tmp_path):
    result = runner.invoke(app, ["train", "predict-post", "--data", str(post_cohort), "-o",
                                 str(tmp_path / "m"), "--target", "delta"])
    assert result.exit_code == 2 and "--target delta: expected post or residual" in result.output


def test_prediction_lands_on_the_pre_grid_in_its_intensity_scale(post_model, post_cohort,
                                                                 tmp_path):
    pre, mask = case_files(post_cohort)
    result = predict(post_model, pre, mask, tmp_path / "post.nii.gz", "--survival", "short",
                     "--json")
    assert result.exit_code == 0, result.output
    prediction, scan = load_volume(tmp_path / "post.nii.gz"), load_volume(pre)
    assert prediction.shape == scan.shape and np.allclose(prediction.affine, scan.affine)
    brain = scan.array > 0
    assert not prediction.array[~brain].any()
    # model units (÷ the normal-tissue median) are mapped back with the pre scan's median
    # (the 4-step test model is far from right, but not by the factor of ~100 between the units)
    assert 0.3 < prediction.array[brain].mean() / scan.array[brain].mean() < 3
    reported = json.loads(result.stdout)
    assert reported["method"] == "mean" and reported["steps"] == 1 and reported["samples"] == 1


def test_same_seed_same_volume_and_another_seed_another(post_model, post_cohort, tmp_path):
    pre, mask = case_files(post_cohort)
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        result = predict(post_model, pre, mask, tmp_path / f"{name}.nii.gz", "--survival",
                         "long", "--seed", seed, "-q")
        assert result.exit_code == 0, result.output
    a, b, c = (load_volume(tmp_path / f"{n}.nii.gz").array for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_survival_class_and_guidance_change_the_prediction(post_model, post_cohort,
                                                               tmp_path):
    pre, mask = case_files(post_cohort)
    outputs = {}
    for survival, guidance in (("short", "2"), ("long", "2"), ("short", "1"), ("none", "2")):
        out = tmp_path / f"{survival}-{guidance}.nii.gz"
        result = predict(post_model, pre, mask, out, "--survival", survival, "--guidance",
                         guidance, "-q")
        assert result.exit_code == 0, result.output
        outputs[survival, guidance] = load_volume(out).array
    assert not np.array_equal(outputs["short", "2"], outputs["long", "2"])
    assert not np.array_equal(outputs["short", "2"], outputs["short", "1"])


def test_slices_sampled_in_chunks_match_the_whole_volume_in_one_batch(post_model):
    """The chunk size is a memory knob (CPU 64, the GPU benchmark the whole volume): with a
    deterministic sampler it must not change the latents; guidance's two passes share a batch,
    so they must also match the unguided conditional and unconditional runs combined."""
    from tumorcli.infer.predict_post import PostPredictor

    predictor = PostPredictor.load(post_model, torch.device("cpu"))
    generator = torch.Generator().manual_seed(3)
    channels = predictor.config.autoencoder.latent_channels
    noise = torch.randn(5, channels, 8, 8, generator=generator)
    condition = torch.randn(5, channels + 1, 8, 8, generator=generator)
    with torch.no_grad():
        whole = predictor.sample_latents(noise, condition, 1, steps=3, batch=5)
        chunked = predictor.sample_latents(noise, condition, 1, steps=3, batch=2)
        one_step = {label: predictor.sample_latents(noise, condition, label, guidance=1.0,
                                                    steps=1, sampler="ddim")
                    for label in (0, 1)}
        guided = predictor.sample_latents(noise, condition, 1, guidance=3.0, steps=1,
                                          sampler="ddim")
    assert whole.shape == noise.shape and torch.allclose(whole, chunked, atol=1e-5)
    # one DDIM step returns x0_hat, linear in the model output: guidance mixes the two runs
    assert torch.allclose(guided, one_step[0] + 3.0 * (one_step[1] - one_step[0]), atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samples_give_a_mean_and_an_uncertainty_map(post_model, post_cohort, tmp_path, sampler):
    pre, mask = case_files(post_cohort)
    result = predict(post_model, pre, mask, tmp_path / "mean.nii.gz", "--survival", "short",
                     "--method", "samples", "--steps", "3", "--samples", "2",
                     "--uncertainty", str(tmp_path / "sd.nii.gz"), "--sampler", sampler, "-q")
    assert result.exit_code == 0, result.output
    sd = load_volume(tmp_path / "sd.nii.gz").array
    brain = load_volume(pre).array > 0
    assert sd.min() >= 0 and sd[brain].max() > 0 and not sd[~brain].any()


def test_a_mask_on_another_grid_is_one_line_naming_it(post_model, post_cohort, tmp_path):
    pre, mask = case_files(post_cohort)
    image = nib.load(mask)
    shifted = tmp_path / "shifted-seg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine @ np.diag([1, 1, 1.5, 1])),
             shifted)
    result = predict(post_model, pre, shifted, tmp_path / "x.nii.gz", "--survival", "short")
    assert result.exit_code == 2
    assert "shifted-seg.nii.gz: the mask is not on the grid of" in result.output
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("args, message", [
    (["--method", "samples", "--steps", "0"], "--steps 0: outside 1–1000"),
    (["--method", "samples", "--samples", "1", "--uncertainty", "sd.nii.gz"],
     "needs ≥ 1, and ≥ 2 with --uncertainty"),
    (["--method", "samples", "--samples", "0"], "--samples 0: needs ≥ 1"),
    (["--samples", "4"], "--samples applies to --method samples"),
    (["--uncertainty", "sd.nii.gz"], "--uncertainty applies to --method samples"),
    (["--guidance", "-1"], "--guidance -1.0: must be ≥ 0"),
    (["--model", "nowhere"], "--model nowhere: no such model"),
])
def test_bad_options_are_bad_input(post_cohort, tmp_path, args, message):
    pre, mask = case_files(post_cohort)
    result = runner.invoke(app, ["predict-post", "--pre", str(pre), "--mask", str(mask), "-o",
                                 str(tmp_path / "x.nii.gz"), "--survival", "short", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_segmentation_model_is_not_a_predict_post_model(tiny_segmenter, post_cohort, tmp_path):
    pre, mask = case_files(post_cohort)
    result = predict(tiny_segmenter[0], pre, mask, tmp_path / "x.nii.gz", "--survival", "short")
    assert result.exit_code == 2 and "not a predict-post model" in result.output


def test_an_autoencoder_from_a_folder_without_one_is_bad_input(post_cohort, tmp_path):
    other = tmp_path / "segmenter"
    other.mkdir()
    (other / "config.json").write_text('{"kind": "segment"}')
    (other / "autoencoder.safetensors").write_bytes(b"")
    for folder, message in ((tmp_path / "none", "needs a predict-post model folder"),
                            (other, "not a predict-post model")):
        result = runner.invoke(app, ["train", "predict-post", "--data", str(post_cohort), "-o",
                                     str(tmp_path / "out"), "--autoencoder-from", str(folder)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "out").exists()


def test_a_cohort_without_survival_classes_is_bad_input(tmp_path):
    root = write_cohort(tmp_path / "c", patients=2, sessions=2)
    result = runner.invoke(app, ["train", "predict-post", "--data", str(root), "-o",
                                 str(tmp_path / "m")])
    assert result.exit_code == 2 and "no cohort.csv" in result.output


def test_post_is_the_next_or_the_last_follow_up(tmp_path):
    from tumorcli.train.post_data import find_pairs

    root = write_cohort(tmp_path / "c", patients=1, sessions=3)
    (root / "cohort.csv").write_text("subject,session,survival_class\n"
                                     + "".join(f"BraTS-GLI-00001,00{s},short\n" for s in range(3)))
    (pair_next,), (pair_last,) = find_pairs(root, "next"), find_pairs(root, "last")
    assert pair_next.pre_t1c == pair_last.pre_t1c and "-000-" in pair_next.pre_t1c.name
    assert "-001-" in pair_next.post_t1c.name and "-002-" in pair_last.post_t1c.name
    result = runner.invoke(app, ["train", "predict-post", "--data", str(root), "-o",
                                 str(tmp_path / "m"), "--post", "first"])
    assert result.exit_code == 2 and "--post first: expected next or last" in result.output


def test_a_model_that_predicts_no_change_returns_the_pre_scan_away_from_the_tumour(
        post_model, post_cohort, monkeypatch):
    """Beyond margin + ramp the pre scan's own detail is added back: a denoiser that hands back
    the pre latent then gives the pre scan itself there, and the autoencoder's copy of it
    within the margin."""
    from scipy import ndimage

    from tumorcli.infer.predict_post import PostPredictor

    monkeypatch.setattr(PostPredictor, "_denoise",
                        lambda self, noise, condition, *rest: condition[:, :noise.shape[1]])
    predictor = PostPredictor.load(post_model, torch.device("cpu"))
    predictor.config = dataclasses.replace(predictor.config, detail_margin_mm=4.0,
                                           detail_ramp_mm=4.0)
    pre_path, mask_path = case_files(post_cohort)
    pre, mask = load_volume(pre_path), load_volume(mask_path)
    result = predictor.predict(pre, mask, "short", steps=2, samples=2)
    plain = predictor.predict(pre, mask, "short", steps=2, samples=1, detail=False).mean.array
    config = predictor.config
    spacing = np.linalg.norm(pre.affine[:3, :3], axis=0)
    distance = ndimage.distance_transform_edt(~(mask.array > 0), sampling=spacing)
    brain = pre.array > 0
    far = brain & (distance > config.detail_margin_mm + config.detail_ramp_mm)
    near = brain & (distance < config.detail_margin_mm)
    assert far.sum() > 100 and near.sum() > 100
    assert np.allclose(result.mean.array[far], pre.array[far], atol=1e-3 * pre.array.max())
    assert np.allclose(result.mean.array[near], plain[near], atol=1e-4 * pre.array.max())
    assert not np.allclose(plain[far], pre.array[far], atol=1e-3 * pre.array.max())


def test_samples_drawn_in_one_batch_equal_samples_drawn_one_at_a_time(post_model, post_cohort):
    from tumorcli.infer.predict_post import PostPredictor

    predictor = PostPredictor.load(post_model, torch.device("cpu"))
    pre, mask = (load_volume(p) for p in case_files(post_cohort))
    batch = predictor.predict(pre, mask, "long", steps=3, samples=3, seed=4, batch=7)
    first = predictor.predict(pre, mask, "long", steps=3, samples=1, seed=4)
    assert len(batch.samples) == 3
    tolerance = 1e-4 * float(np.abs(first.mean.array).max())
    assert np.allclose(batch.samples[0], first.mean.array, atol=tolerance)
    assert np.allclose(batch.mean.array, np.mean(batch.samples, axis=0), atol=1e-5)
    assert not np.allclose(batch.samples[0], batch.samples[1])


def test_training_pairs_put_the_followup_in_the_pre_scans_gain_and_bias(post_cohort, tmp_path):
    """A follow-up that is the pre scan × a gain × a smooth field comes back to the pre scan:
    the gain exactly, the field in part (the 20 mm smoothing of the field estimate flattens a
    field that varies within this 96 mm test volume; a head is 2–3 × wider)."""
    import shutil

    from scipy.ndimage import gaussian_filter

    from tumorcli.train.post_data import find_pairs, load_pair

    cohort = tmp_path / "cohort"
    shutil.copytree(post_cohort, cohort)
    pre_path, _ = case_files(cohort)
    post_case = cohort / "BraTS-GLI-00001-001"
    post_path = post_case / f"{post_case.name}-t1c.nii.gz"
    image = nib.load(pre_path)
    pre = np.asarray(image.dataobj, np.float32)
    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.normal(size=pre.shape), 15)   # 30 mm: a bias field's scale
    field = np.exp(0.25 * field / field.std())
    nib.save(nib.Nifti1Image(pre * field * 3.7, image.affine), post_path)
    shutil.copy(str(pre_path).replace("-t1c", "-seg"), post_case / f"{post_case.name}-seg.nii.gz")
    pair = next(p for p in find_pairs(cohort) if p.pre_t1c == pre_path)
    slices = load_pair(pair, 2.0, 8)
    brain = slices.pre != 0
    assert np.median(slices.pre[brain]) == pytest.approx(1.0, abs=0.05)
    inside = pre > 0
    followup = pre * field * 3.7
    gain_error = np.abs(followup / np.median(followup[inside])
                        - pre / np.median(pre[inside]))[inside].mean()   # a gain match alone
    assert gain_error > 0.1
    assert np.abs(slices.post - slices.pre)[brain].mean() < 0.6 * gain_error
