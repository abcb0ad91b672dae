"""Options and output helpers that every verb shares, so all verbs read the same way.

Conventions: -i/--input, -o/--output, --device auto|cpu|cuda|cuda:N, --seed, --quiet, --json.
With --json the verb prints exactly one JSON object on stdout and nothing else there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

InputPath = Annotated[Path, typer.Option("-i", "--input", help="Input file or folder.")]
OutputPath = Annotated[Path, typer.Option("-o", "--output", help="Output file or folder.")]
Device = Annotated[str, typer.Option(
    "--device", help="auto | cpu | cuda | cuda:N  (auto = CUDA when present, else CPU).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same output.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]
Jobs = Annotated[int, typer.Option("--jobs", "-j", help="Items processed in parallel (processes).")]
OptionalText = Optional[str]


def start(quiet: bool, as_json: bool) -> None:
    """Call first in every verb: progress bars follow --quiet (and stay off with --json)."""
    from tumorcli.progress import set_quiet

    set_quiet(quiet or as_json)


def check_jobs(jobs: int) -> None:
    """--jobs must be a positive count of worker processes."""
    from tumorcli.errors import BadInput

    if jobs < 1:
        raise BadInput(f"--jobs {jobs}: must be at least 1", "e.g. --jobs 2 on a 2-core machine")


def finish(result: dict[str, Any], *, as_json: bool, quiet: bool,
           human: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Print a verb's result: JSON on stdout with --json, else a human summary unless --quiet."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    elif not quiet and human is not None:
        human(result)


def console():
    """Rich console for human output; when piped or logged, tables are not squeezed to 80 columns."""
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out = Console(highlight=False, soft_wrap=True, width=160)
    return out
