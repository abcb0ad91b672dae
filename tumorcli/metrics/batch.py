"""Run one function over many masks or cases, in order, optionally in several processes.

A TumorError of one item does not stop the others: it comes back as that item's error, so the
CLI can write what succeeded and report a partial batch.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, Callable, Iterable

from tumorcli.errors import TumorError


def run_each(function: Callable[..., Any], items: list, jobs: int = 1,
             advance: Callable[..., None] = lambda steps=1: None
             ) -> Iterable[tuple[Any, TumorError | None]]:
    """Yield (result, None) or (None, error) for each item, in the order of `items`.

    function: picklable (module level) when jobs > 1; jobs: worker processes (1 = this one).
    """
    if jobs <= 1 or len(items) <= 1:
        for item in items:
            yield _guarded(function, item)
            advance()
        return
    chunk = max(1, len(items) // (jobs * 8))
    with ProcessPoolExecutor(max_workers=min(jobs, len(items))) as pool:
        for result, error in pool.map(partial(_guarded_portable, function), items,
                                      chunksize=chunk):
            if error is not None:
                kind, message, hint = error
                error = kind(message, hint)
            yield result, error
            advance()


def _guarded(function, item) -> tuple[Any, TumorError | None]:
    try:
        return function(item), None
    except TumorError as error:
        return None, error


def _guarded_portable(function, item) -> tuple[Any, tuple | None]:
    # TumorError(message, hint) does not survive pickling with its hint: send its parts.
    result, error = _guarded(function, item)
    return result, None if error is None else (type(error), error.message, error.hint)
