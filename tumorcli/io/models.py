"""Finding shipped and user-trained models: folders holding config.json + *.safetensors.

Search order: every folder in $TUMOR_MODELS (os.pathsep-separated), then `models/` in the
current folder, then the `models/` folder beside the package (a source checkout or an editable
install), then the shipped weights that `pip install` puts in <environment>/share/tumorcli/models.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import tumorcli


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    architecture: str
    weights_mb: float
    has_card: bool
    origin: str  # which search root it was found under


def model_roots() -> list[tuple[str, Path]]:
    roots: list[tuple[str, Path]] = []
    for entry in os.environ.get("TUMOR_MODELS", "").split(os.pathsep):
        if entry.strip():
            roots.append(("$TUMOR_MODELS", Path(entry).expanduser()))
    roots.append(("./models", Path.cwd() / "models"))
    roots.append(("shipped", Path(tumorcli.__file__).resolve().parent.parent / "models"))
    roots.append(("installed", Path(sys.prefix) / "share" / "tumorcli" / "models"))
    unique: dict[Path, tuple[str, Path]] = {}
    for origin, root in roots:
        unique.setdefault(root.resolve(), (origin, root))
    return list(unique.values())


def find_models() -> list[ModelEntry]:
    """Every model folder under the search roots; a name found twice keeps the first."""
    found: dict[str, ModelEntry] = {}
    for origin, root in model_roots():
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            weights = sorted(folder.glob("*.safetensors"))
            config_path = folder / "config.json"
            if not weights or not config_path.is_file() or folder.name in found:
                continue
            try:
                architecture = str(json.loads(config_path.read_text()).get("architecture", "?"))
            except (OSError, ValueError):
                architecture = "unreadable config.json"
            found[folder.name] = ModelEntry(
                name=folder.name, path=folder, architecture=architecture,
                weights_mb=round(sum(w.stat().st_size for w in weights) / 2**20, 2),
                has_card=(folder / "card.md").is_file(), origin=origin)
    return list(found.values())
