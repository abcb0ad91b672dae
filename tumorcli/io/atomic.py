"""Atomic outputs: write to a temporary name in the same folder, rename at the end.

A crash or a bad input never leaves a half-written file or folder under the final name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tumorcli.errors import BadInput


def _temporary_sibling(final: Path) -> Path:
    # Keep the full suffix (.nii.gz) so format-sniffing writers still recognise the file.
    return final.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{final.name}")


def _check_parent(final: Path) -> None:
    if not final.parent.exists():
        raise BadInput(f"{final}: the output folder {final.parent} does not exist",
                       "create it first or choose another output path")


@contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success rename it onto `final`."""
    final = Path(final)
    _check_parent(final)
    temporary = _temporary_sibling(final)
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            temporary.unlink()


@contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder next to `final`; on success it becomes `final`.

    `final` must not exist, or be an empty folder: we never mix new files with old ones.
    """
    final = Path(final)
    _check_parent(final)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise BadInput(f"{final}: the output already exists and is not an empty folder",
                       "choose a new output folder or remove the old one")
    temporary = _temporary_sibling(final)
    temporary.mkdir()
    try:
        yield temporary
        if final.exists():
            final.rmdir()
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
