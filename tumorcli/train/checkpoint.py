"""Training checkpoints without pickle: tensors (model + optimiser moments) in one safetensors
file, everything else (step, best score, optimiser hyper-parameters) in a json beside it.
Both are written to temporary names and renamed, the json last, so a crash mid-save leaves the
previous checkpoint usable."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tumorcli.errors import BadInput, first_line
from tumorcli.io.atomic import atomic_file

TENSORS = "checkpoint.safetensors"
STATE = "checkpoint.json"
UNLOGGED = "unlogged_losses"   # a stopped run's losses since its last log row


def save_checkpoint(folder: Path, net: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, extra_nets: dict[str, nn.Module] | None = None) -> None:
    """`state`: json-able training state (step, best, ...). extra_nets: e.g. an EMA copy."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    for prefix, other in (extra_nets or {}).items():
        tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous()
                        for k, v in other.state_dict().items()})
    optimiser_state = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for index, values in optimiser_state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = float(value)
    with atomic_file(Path(folder) / TENSORS) as temporary:
        save_file(tensors, str(temporary))
    record = {**state, "optimizer": {"param_groups": optimiser_state["param_groups"],
                                     "scalars": scalars}}
    with atomic_file(Path(folder) / STATE) as temporary:
        temporary.write_text(json.dumps(record, indent=1))


def save_stopped(folder: Path, net: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                 step: int, losses: list[float],
                 extra_nets: dict[str, nn.Module] | None = None) -> None:
    """A checkpoint between two log rows (a stop signal): `step` optimiser steps done, and the
    losses since the last row, so the resumed run's next row averages the same steps."""
    save_checkpoint(folder, net, optimizer, {**state, "step": step, UNLOGGED: losses}, extra_nets)


def unlogged_losses(state: dict) -> list[float]:
    """Take the losses a stopped run saved (none after a regular checkpoint) out of `state`."""
    return [float(v) for v in state.pop(UNLOGGED, [])]


def load_checkpoint(folder: Path, net: nn.Module, optimizer: torch.optim.Optimizer,
                    extra_nets: dict[str, nn.Module] | None = None) -> dict:
    """Restore net, optimiser (and extra nets) in place; returns the saved training state."""
    from safetensors.torch import load_file

    folder = Path(folder)
    record = _read_record(folder)
    try:
        tensors = load_file(str(folder / TENSORS))
    except (OSError, ValueError) as error:
        raise BadInput(f"{folder}: checkpoint unreadable ({first_line(error)})",
                       "start again in a new folder") from None
    device = next(net.parameters()).device
    for prefix, module in {"model": net, **(extra_nets or {})}.items():
        module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items()
                                if k.startswith(prefix + ".")})
    saved = record.pop("optimizer")
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device)
    for index, values in saved["scalars"].items():
        for name, value in values.items():
            state.setdefault(int(index), {})[name] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    return record


def read_state(folder: Path) -> dict:
    """The saved training state (step, stage, best, ...) without loading any tensor."""
    return {k: v for k, v in _read_record(Path(folder)).items() if k != "optimizer"}


def _read_record(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE).read_text())
    except FileNotFoundError:
        raise BadInput(f"{folder}: no checkpoint to resume from",
                       "drop --resume to start a new training run") from None
    except (OSError, ValueError) as error:
        raise BadInput(f"{folder}: checkpoint unreadable ({first_line(error)})",
                       "start again in a new folder") from None


def append_log(path: Path, columns: tuple[str, ...], row: list) -> None:
    """One row of a training log CSV (header first when the file is new); floats to 6 digits."""
    import csv

    new = not Path(path).exists()
    with open(path, "a", newline="") as stream:
        writer = csv.writer(stream)
        if new:
            writer.writerow(columns)
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])


def close_epoch(out: Path, columns: tuple[str, ...], row: list, net: nn.Module,
                optimizer: torch.optim.Optimizer, state: dict, step: int, epoch: int,
                score: float) -> None:
    """End of an epoch: the log row (train_log.csv), the weights when `score` beats
    state["best_val_dice"] (or there is no score), and a resumable checkpoint."""
    from tumorcli.nets.weights import WEIGHTS, save_weights

    append_log(out / "train_log.csv", columns, row)
    if score != score or score > state["best_val_dice"]:   # score != score: NaN, no validation
        state.update(best_val_dice=score, best_epoch=epoch)
        save_weights(net, out / WEIGHTS)
    state.update(step=step, epoch=epoch)
    save_checkpoint(out, net, optimizer, state)
