"""Rich progress bars on stderr for anything longer than a second; silent with --quiet.

Core code reports progress through `task(...)` without knowing about the CLI; the CLI only
switches bars off (`set_quiet`). Bars are drawn only on a terminal, so pipes and logs stay clean.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


@contextmanager
def task(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """Yield `advance(steps=1)`; draws a bar with `total` steps on stderr when interactive."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeRemainingColumn)

    console = Console(stderr=True)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                        transient=True, disable=_quiet or not console.is_terminal)
    with progress:
        task_id = progress.add_task(description, total=total)
        yield lambda steps=1: progress.advance(task_id, steps)
