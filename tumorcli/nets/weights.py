"""Model folders: config.json + model.safetensors (+ card.md). Never unpickles anything."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from tumorcli.errors import BadInput, first_line
from tumorcli.io.atomic import atomic_file

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_weights(net: nn.Module, path: Path, *, half: bool = True) -> Path:
    """Write the net's tensors as safetensors, floats in fp16 when `half` (shipping size)."""
    from safetensors.torch import save_file

    tensors = {name: (t.detach().half() if half and t.is_floating_point() else t.detach())
               .cpu().contiguous() for name, t in net.state_dict().items()}
    with atomic_file(path) as temporary:
        save_file(tensors, str(temporary))
    return Path(path)


def load_weights(net: nn.Module, path: Path) -> nn.Module:
    """Fill `net` from a safetensors file (cast to the net's dtypes); BadInput when it does not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise BadInput(f"{path}: not a readable safetensors file ({first_line(error)})",
                       "re-train the model or restore the file") from None
    own = net.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
                  if unexpected else f"shape of {wrong[0]} {tuple(tensors[wrong[0]].shape)} "
                  f"!= {tuple(own[wrong[0]].shape)}")
        raise BadInput(f"{path}: weights do not fit the network in config.json ({detail})",
                       "keep model.safetensors and config.json from the same training run")
    net.load_state_dict({k: tensors[k].to(own[k].dtype) for k in own})
    return net


def write_config(folder: Path, config: dict) -> Path:
    path = Path(folder) / CONFIG
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(config, indent=2) + "\n")
    return path


def read_config_of(folder: Path, kind: str, trainer: str) -> dict:
    """config.json of a model of `kind` ("growth", "predict-post", …); BadInput naming the
    kind it is and the `tumor train` verb that makes the right one."""
    data = read_config(folder)
    if data.get("kind") != kind:
        raise BadInput(f"{folder}: a {data.get('kind', 'unknown')} model, not a {kind} model",
                       f"pick a model made by tumor train {trainer}")
    return data


def read_config(folder: Path) -> dict:
    path = Path(folder) / CONFIG
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{folder}: no config.json, so this is not a model folder",
                       "give a folder written by `tumor train`, or see `tumor info --models`") \
            from None
    except (OSError, ValueError) as error:
        raise BadInput(f"{path}: unreadable ({first_line(error)})",
                       "restore the model folder") from None
