"""Fixtures shared by several test files (built once per test session)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from seg_factory import write_cohort  # noqa: E402

TINY_SEGMENTER = ["--channels", "8,16,32", "--patch", "32,32,32", "--lr", "1e-2", "--warmup",
                  "5", "--val-cases", "1", "--batch-size", "2", "--epochs", "2",
                  "--steps-per-epoch", "40", "--augment", "basic"]


@pytest.fixture(scope="session")
def seg_cohort(tmp_path_factory) -> Path:
    """6 tiny labelled patients (48×48×40 at 2 mm), one session each."""
    return write_cohort(tmp_path_factory.mktemp("seg_cohort"), patients=6)


@pytest.fixture(scope="session")
def tiny_segmenter(seg_cohort, tmp_path_factory) -> tuple[Path, dict]:
    """A tiny Res U-Net trained by `tumor train segment` on `seg_cohort`: (folder, summary)."""
    from typer.testing import CliRunner

    from tumorcli.cli.app import app

    out = tmp_path_factory.mktemp("models") / "tiny-resunet"
    result = CliRunner().invoke(app, ["train", "segment", "--data", str(seg_cohort), "-o",
                                      str(out), *TINY_SEGMENTER, "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)
