"""Where computation runs and how it is seeded: `--device` and `--seed` for every verb."""

from __future__ import annotations

import random

from tumorcli.errors import BadInput


def resolve_device(spec: str = "auto"):
    """torch.device for 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    import torch

    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BadInput(f"--device {spec}: CUDA is not available on this machine",
                           "use --device cpu or --device auto")
        index = text.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise BadInput(f"--device {spec}: no such GPU (this machine has "
                           f"{torch.cuda.device_count()})", "use cuda:0 … cuda:N-1, or --device auto")
        return torch.device(text)
    raise BadInput(f"--device {spec}: not a device", "use auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run with the same seed repeats."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
