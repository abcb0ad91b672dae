"""Diffusion refinement: label/prior encodings, the losses, training from the CLI with cached
priors, seeded refinement and `tumor segment --refine`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.nets.segmentation import (classes_from_labels, classes_from_regions,
                                        regions_from_classes)
from tumorcli.train.refine import class_edges

runner = CliRunner()
TINY = {"medsegdiff": ["--channels", "8,16", "--size", "48", "--batch-size", "4"],
        "ddpm": ["--channels", "8,16", "--patch", "32", "--batch-size", "1"]}


def test_classes_and_regions_round_trip_and_sum_to_one():
    regions = torch.rand(2, 3, 5, 5, 5)
    classes = classes_from_regions(regions)
    assert torch.allclose(classes.sum(1), torch.ones(2, 5, 5, 5))
    assert (classes >= 0).all()
    nested = regions.clone()
    nested[:, 0] = torch.maximum(nested[:, 0], nested[:, 2])
    nested[:, 1] = torch.maximum(nested[:, 1], nested[:, 0])
    assert torch.allclose(regions_from_classes(classes), nested, atol=1e-6)
    labels = torch.tensor([[[[0, 1], [2, 3]]]])                  # (1, 1, 2, 2)
    assert regions_from_classes(classes_from_labels(labels))[0, :, 0].tolist() == [
        [[0, 1], [0, 1]], [[0, 1], [1, 1]], [[0, 0], [0, 1]]]


def test_class_edges_mark_both_sides_of_a_boundary_only():
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    labels[:, 4:] = 2
    edges = class_edges(classes_from_labels(labels))[0, 0]
    assert edges[3:5].all() and not edges[:3].any() and not edges[5:].any()


@pytest.fixture(scope="module", params=["medsegdiff", "ddpm"])
def tiny_refiner(request, tiny_segmenter, seg_cohort, tmp_path_factory):
    kind = request.param
    out = tmp_path_factory.mktemp("refiners") / kind
    result = runner.invoke(app, ["train", "refine", "--kind", kind, "--prior",
                                 str(tiny_segmenter[0]), "--data", str(seg_cohort), "-o", str(out),
                                 "--epochs", "1", "--steps-per-epoch", "6", "--val-cases", "1",
                                 *TINY[kind], "--json"])
    assert result.exit_code == 0, result.output
    return kind, out, json.loads(result.stdout)


def test_training_caches_priors_keeps_the_prior_split_and_writes_fp16_weights(tiny_refiner,
                                                                              tiny_segmenter):
    from safetensors.torch import load_file

    kind, out, summary = tiny_refiner
    split = json.loads((out / "split.json").read_text())
    prior_split = json.loads((tiny_segmenter[0] / "split.json").read_text())
    assert split["train"] == prior_split["train"] and split["test"] == prior_split["test"]
    assert sorted(p.stem for p in (out / "priors").iterdir()) == sorted(split["train"]
                                                                       + split["val"][:1])
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "refiner" and config["refiner"] == kind
    assert config["schedule"] == {"medsegdiff": "linear", "ddpm": "cosine"}[kind]
    weights = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    assert summary["step"] == 6 and (out / "train_log.csv").is_file()


def test_refinement_is_seeded_votes_sum_to_one_and_keeps_the_prior_outside_its_box(
        tiny_refiner, tiny_segmenter, seg_cohort):
    from tumorcli.infer.refine import Refiner
    from tumorcli.infer.segment import Segmenter
    from tumorcli.train.data import find_cases
    from tumorcli.train.priors import load_refine_case

    kind, out, _ = tiny_refiner
    segmenter = Segmenter.load(tiny_segmenter[0], torch.device("cpu"))
    case = load_refine_case(find_cases(seg_cohort)[0], segmenter, out / "priors")
    refiner = Refiner.load(out, torch.device("cpu"))
    prior = torch.from_numpy(case.prior.astype(np.float32))
    image = case.image.astype(np.float32)
    first = refiner.refine(image, prior, steps=3, samples=3, seed=5)
    again = refiner.refine(image, prior, steps=3, samples=3, seed=5)
    assert torch.equal(first.fractions, again.fractions)
    assert torch.allclose(first.fractions.sum(0), torch.ones(prior.shape[1:]), atol=1e-3)
    assert first.entropy.min() >= 0 and first.entropy.max() <= np.log(3) + 1e-6
    tumour = (prior[1:].sum(0) >= 0.5).nonzero()
    far = tumour.max(0).values + 9                     # beyond the box's 8-voxel margin
    if (far < torch.tensor(prior.shape[1:])).all():
        assert torch.equal(first.fractions[:, far[0]:, far[1]:, far[2]:],
                           prior[:, far[0]:, far[1]:, far[2]:])
    unconditional = refiner.refine(image, prior, steps=3, conditional=False)
    assert unconditional.fractions.shape == prior.shape


def test_segment_refine_writes_labels_and_an_uncertainty_map(tiny_refiner, tiny_segmenter,
                                                              seg_cohort, tmp_path):
    import nibabel as nib

    kind, out, _ = tiny_refiner
    subject = sorted(p for p in seg_cohort.iterdir() if p.is_dir())[0]
    args = ["segment", "-i", str(subject), "--model", str(tiny_segmenter[0]), "--refine", kind,
            "--refiner", str(out), "--steps", "3", "--samples", "2", "--seed", "1"]
    first = runner.invoke(app, [*args, "-o", str(tmp_path / "a.nii.gz"), "--uncertainty",
                                str(tmp_path / "u.nii.gz")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*args, "-o", str(tmp_path / "b.nii.gz")])
    assert second.exit_code == 0, second.output
    a, b = (nib.load(tmp_path / f"{n}.nii.gz") for n in "ab")
    reference = nib.load(next(subject.glob("*t1c.nii.gz")))
    assert a.shape == reference.shape and np.allclose(a.affine, reference.affine)
    assert np.array_equal(a.get_fdata(), b.get_fdata())          # same seed, same labels
    assert set(np.unique(a.get_fdata())) <= {0, 1, 2, 3}
    entropy = nib.load(tmp_path / "u.nii.gz").get_fdata()
    assert entropy.shape == reference.shape and entropy.min() >= 0


@pytest.mark.parametrize("args, message", [
    (["--refine", "ddpm", "--samples", "0"], "--samples 0"),
    (["--uncertainty", "u.nii.gz"], "--uncertainty, --refiner and --unconditional need --refine"),
    (["--refine", "medsegdiff", "--refiner", "{prior}"], "not a refiner"),
])
def test_bad_refine_options_are_one_red_line(tiny_segmenter, seg_cohort, tmp_path, args, message):
    subject = sorted(p for p in seg_cohort.iterdir() if p.is_dir())[0]
    args = [a.replace("{prior}", str(tiny_segmenter[0])) for a in args]
    result = runner.invoke(app, ["segment", "-i", str(subject), "-o", str(tmp_path / "s.nii.gz"),
                                 "--model", str(tiny_segmenter[0]), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_refined_islands_without_the_prior_class_go_back_to_the_prior():
    from tumorcli.infer.refine import revert_islands
    from tumorcli.nets.segmentation import classes_from_labels

    prior_labels = torch.zeros((1, 20, 20, 20), dtype=torch.long)
    prior_labels[0, 5:10, 5:10, 5:10] = 2                      # SNFH
    prior_labels[0, 6:8, 6:8, 6:8] = 3                         # ET inside it
    refined_labels = prior_labels.clone()
    refined_labels[0, 5:10, 5:11, 5:10] = 2                    # boundary moved: kept
    refined_labels[0, 6:8, 6:9, 6:8] = 3                       # ET grown from the prior's: kept
    refined_labels[0, 15, 15, 15] = 3                          # a stray ET voxel: reverted
    refined_labels[0, 8, 8, 8] = 1                             # NETC the prior never had: reverted
    prior = classes_from_labels(prior_labels)[0].float()
    refined = classes_from_labels(refined_labels)[0].float()
    out = revert_islands(refined, prior).argmax(0)
    assert out[15, 15, 15] == 0 and out[8, 8, 8] == 2
    expected = refined_labels[0].clone()
    expected[15, 15, 15], expected[8, 8, 8] = 0, 2
    assert torch.equal(out, expected)
    assert revert_islands(prior, prior) is prior                # nothing to revert


def test_training_chooses_the_refined_labels_own_rule_on_val_sessions(tiny_refiner):
    kind, out, summary = tiny_refiner
    tuned = json.loads((out / "config.json").read_text())["postprocess"]
    assert tuned["rule"] == "strays+small-regions" and "val session" in tuned["tuned_on"]
    assert summary["postprocess"] == tuned and len(tuned["dice_after"]) == 3


def _with_rule(source, folder, rule):
    import shutil

    from tumorcli.infer.postprocess import LabelRule

    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("priors"))
    config = json.loads((folder / "config.json").read_text())
    config["postprocess"] = LabelRule(*rule).to_dict()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("tiny_refiner", ["medsegdiff"], indirect=True)
def test_refined_labels_go_through_the_refiners_rule_not_the_priors(tiny_refiner, tiny_segmenter,
                                                                    seg_cohort, tmp_path):
    """A rule no tumour core passes (every core voxel → oedema) shows whose rule ran. The
    routing is the same for both kinds; the 6-step ddpm's refined labels hold no core to see."""
    from tumorcli.io.volume import load_volume

    kind, out, _ = tiny_refiner
    strict, off = (1e6, 1e6), (0, 0)
    models = {"strict prior": _with_rule(tiny_segmenter[0], tmp_path / "prior-strict", strict),
              "prior": _with_rule(tiny_segmenter[0], tmp_path / "prior", off),
              "strict refiner": _with_rule(out, tmp_path / "refiner-strict", strict),
              "refiner": _with_rule(out, tmp_path / "refiner", off)}
    subject = max((p for p in seg_cohort.iterdir() if p.is_dir()),
                  key=lambda p: np.isin(load_volume(next(p.glob("*seg.nii.gz"))).array,
                                        (1, 3)).sum())
    runs = {"no rule": ("prior", "refiner", "--no-postprocess"),
            "strict prior only": ("strict prior", "refiner", "--postprocess"),
            "strict refiner only": ("prior", "strict refiner", "--postprocess")}
    labels = {}
    for name, (prior, refiner, flag) in runs.items():
        path = tmp_path / f"{name}.nii.gz"
        result = runner.invoke(app, ["segment", "-i", str(subject), "-o", str(path), "--model",
                                     str(models[prior]), "--refine", kind, "--refiner",
                                     str(models[refiner]), "--steps", "2", flag, "-q"])
        assert result.exit_code == 0, result.output
        labels[name] = np.asarray(load_volume(path).array)
    assert np.isin(labels["no rule"], (1, 3)).any()            # the refined labels have a core
    np.testing.assert_array_equal(labels["strict prior only"], labels["no rule"])
    assert not np.isin(labels["strict refiner only"], (1, 3)).any()
    np.testing.assert_array_equal(labels["strict refiner only"] > 0, labels["no rule"] > 0)


def test_train_postprocess_chooses_a_refiners_rule_through_refinement(tiny_refiner,
                                                                       tiny_segmenter,
                                                                       seg_cohort, tmp_path):
    kind, out, _ = tiny_refiner
    refiner = _with_rule(out, tmp_path / "refiner", (1e6, 1e6))
    result = runner.invoke(app, ["train", "postprocess", "--model", str(refiner), "--data",
                                 str(seg_cohort), "--json"])   # prior: the one it trained with
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["prior"] == str(tiny_segmenter[0]) and answer["sessions"] >= 1
    tuned = json.loads((refiner / "config.json").read_text())["postprocess"]
    assert tuned["min_et_cm3"] <= 4 and tuned["min_tc_cm3"] <= 4   # the 1e6 rule is gone
    result = runner.invoke(app, ["train", "postprocess", "--model", str(tiny_segmenter[0]),
                                 "--prior", str(tiny_segmenter[0]), "--data", str(seg_cohort)])
    assert result.exit_code == 2 and "is not a refiner" in result.output, result.output
