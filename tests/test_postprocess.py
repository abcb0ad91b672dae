"""Small-region post-processing: the rule relabels by volume in cm³ on any grid, its tuning
scores a rule without re-running the metrics (checked against evaluating the relabelled
labels), `tumor train segment` chooses and records it, `tumor train postprocess` rechooses it,
and `tumor segment --no-postprocess` skips it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.infer.postprocess import LabelRule
from tumorcli.io.volume import Volume, load_volume
from tumorcli.metrics.evaluation import evaluate_case
from tumorcli.metrics.regions import parse_labels
from tumorcli.train.postprocess import SessionScores

runner = CliRunner()


def box(labels, value, low, size):
    labels[tuple(slice(l, l + size) for l in low)] = value


def test_an_et_of_0_4_cm3_becomes_netc_under_a_0_5_cm3_rule_on_a_2mm_grid():
    labels = np.zeros((30, 30, 30), np.uint8)
    box(labels, 2, (2, 2, 2), 20)           # oedema
    box(labels, 3, (5, 5, 5), 4)            # 64 voxels × 8 mm³ = 0.512 cm³ of ET
    box(labels, 1, (12, 12, 12), 2)         # 8 voxels of NETC = 0.064 cm³
    voxel_cm3 = 8 / 1000
    kept = LabelRule(min_et_cm3=0.5).apply(labels, voxel_cm3)
    assert (kept == 3).sum() == 64          # 0.512 cm³ is not under 0.5
    relabelled = LabelRule(min_et_cm3=0.6).apply(labels, voxel_cm3)
    assert (relabelled == 3).sum() == 0 and (relabelled == 1).sum() == 72
    no_core = LabelRule(min_et_cm3=0.6, min_tc_cm3=0.6).apply(labels, voxel_cm3)
    assert set(np.unique(no_core)) == {0, 2} and (no_core == 2).sum() == (labels > 0).sum()
    assert (labels == 3).sum() == 64        # the input is left alone


def test_a_rule_that_is_off_returns_the_labels_unchanged():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:4, 2:4, 2:4] = 3
    assert LabelRule().apply(labels, 1e-3) is labels
    assert not LabelRule().active and LabelRule().describe() == "none"
    assert LabelRule.from_dict(LabelRule(1, 2).to_dict()) == LabelRule(1, 2)
    assert LabelRule(1, 0).describe() == "ET < 1 cm³ → NETC"


@pytest.mark.parametrize("truth_et", [True, False])
def test_tuning_scores_a_rule_exactly_as_evaluating_the_relabelled_labels(truth_et):
    rng = np.random.default_rng(3)
    affine = np.diag([1.0, 1.2, 2.5, 1.0])            # anisotropic: 3 mm³ voxels
    truth = np.zeros((40, 40, 24), np.uint8)
    box(truth, 2, (5, 5, 4), 25)
    box(truth, 1, (12, 12, 8), 8)
    if truth_et:
        box(truth, 3, (14, 14, 10), 3)
    predicted = truth.copy()
    predicted[rng.random(truth.shape) < 0.02] = 0     # some noise on every region
    box(predicted, 3, (20, 20, 14), 2)                # a small false ET: 8 × 3 mm³ = 0.024 cm³
    as_volume = lambda a: Volume(a, affine)
    session = SessionScores.of(as_volume(predicted), as_volume(truth))
    for rule in (LabelRule(), LabelRule(0.05), LabelRule(0.2),
                 LabelRule(0.05, 2.0), LabelRule(0, 4.0)):
        dice, hd95 = session.scores(rule)
        relabelled = rule.apply(predicted, 3 / 1000)
        expected = evaluate_case("c", as_volume(relabelled), as_volume(truth), parse_labels())
        np.testing.assert_allclose(dice, [s.dice for s in expected], atol=1e-9)
        np.testing.assert_allclose(hd95, [s.hd95_mm for s in expected], atol=1e-9)


def test_train_segment_chooses_the_rule_on_val_sessions_and_records_it(tiny_segmenter):
    out, summary = tiny_segmenter
    tuned = json.loads((out / "config.json").read_text())["postprocess"]
    assert tuned["rule"] == "strays+small-regions" and tuned["sessions"] >= 1
    assert summary["postprocess"] == tuned and "val session" in tuned["tuned_on"]
    assert len(tuned["dice_before"]) == 3 and len(tuned["hd95_mm_after"]) == 3
    assert "Post-processing (chosen on the 1 val session)" in (out / "card.md").read_text()


def test_train_postprocess_rewrites_the_rule_and_segment_can_skip_it(tiny_segmenter, seg_cohort,
                                                                     tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_segmenter[0], model)
    config = json.loads((model / "config.json").read_text())
    config.pop("postprocess")
    (model / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["train", "postprocess", "--model", str(model), "--data",
                                 str(seg_cohort), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sessions"] >= 1
    assert "postprocess" in json.loads((model / "config.json").read_text())
    result = runner.invoke(app, ["train", "postprocess", "--model", str(model), "--data",
                                 str(seg_cohort), "--sessions", "all", "--json"])
    assert result.exit_code == 0, result.output
    tuned = json.loads((model / "config.json").read_text())["postprocess"]
    assert tuned["sessions"] == 6 and "a cohort it never saw" in tuned["tuned_on"]

    # a rule no tumour core passes: every tumour voxel becomes oedema, unless skipped
    config = json.loads((model / "config.json").read_text())
    config["postprocess"] = LabelRule(1e6, 1e6).to_dict()
    (model / "config.json").write_text(json.dumps(config))
    case = sorted(p for p in seg_cohort.iterdir() if p.is_dir())[0]
    for flag, out in (("--postprocess", "with.nii.gz"), ("--no-postprocess", "without.nii.gz")):
        result = runner.invoke(app, ["segment", "-i", str(case), "-o", str(tmp_path / out),
                                     "--model", str(model), flag, "-q"])
        assert result.exit_code == 0, result.output
    with_rule = np.asarray(load_volume(tmp_path / "with.nii.gz").array)
    without = np.asarray(load_volume(tmp_path / "without.nii.gz").array)
    assert np.isin(without, (1, 3)).any() and not np.isin(with_rule, (1, 3)).any()
    np.testing.assert_array_equal(with_rule > 0, without > 0)


def test_train_postprocess_without_a_split_is_one_line_and_exit_2(tiny_segmenter, seg_cohort,
                                                                  tmp_path):
    model = tmp_path / "no-split"
    shutil.copytree(tiny_segmenter[0], model)
    (model / "split.json").unlink()
    result = runner.invoke(app, ["train", "postprocess", "--model", str(model), "--data",
                                 str(seg_cohort)])
    assert result.exit_code == 2 and "no split.json with val sessions" in result.output
    result = runner.invoke(app, ["train", "postprocess", "--model", str(tiny_segmenter[0]),
                                 "--data", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a folder" in result.output


def test_a_small_far_component_is_dropped_and_a_near_or_large_one_kept():
    labels = np.zeros((60, 60, 60), np.uint8)
    box(labels, 2, (10, 10, 10), 20)        # the tumour: 8 cm³ at 1 mm
    box(labels, 3, (15, 15, 15), 5)
    box(labels, 2, (50, 50, 50), 4)         # 64 mm³, > 25 mm away: a stray
    box(labels, 2, (32, 10, 10), 3)         # 27 mm³, 2 mm from the tumour: kept (near)
    box(labels, 2, (10, 45, 10), 12)        # 1.7 cm³ > 0.1 × 8 cm³, far: kept (large)
    rule = LabelRule(max_stray_fraction=0.1, min_stray_distance_mm=10)
    cleaned = rule.apply(labels, 1e-3, (1.0, 1.0, 1.0))
    assert cleaned[51, 51, 51] == 0 and (labels > 0).sum() - (cleaned > 0).sum() == 64
    assert cleaned[33, 11, 11] == 2 and cleaned[15, 50, 15] == 2 and (cleaned == 3).sum() == 125
    assert labels[51, 51, 51] == 2          # the input is left alone
    # anisotropic voxels: the gap is measured in mm (2 voxels × 6 mm = 12 mm > 10 mm)
    thick = np.zeros((40, 40, 12), np.uint8)
    box(thick, 2, (5, 5, 2), 6)
    thick[8, 8, 10] = 2
    gone = rule.apply(thick, 6e-3, (1.0, 1.0, 6.0))
    assert gone[8, 8, 10] == 0 and (gone > 0).sum() == 6 ** 3
    assert LabelRule.from_dict(rule.to_dict()) == rule and rule.active
    assert "0.1 × the largest" in rule.describe()
