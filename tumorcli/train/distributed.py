"""torchrun data parallelism: a no-op in a single process, DDP when WORLD_SIZE > 1.

`torchrun --nproc_per_node N -m tumorcli train segment|refine|predict-post ...` starts N ranks
(NCCL on GPUs, gloo on CPUs). Step s has one global batch of N·B examples; example i is drawn
from its own stream (seed, step, i) and rank r takes examples r·B … r·B + B − 1, so N ranks of
batch B see exactly what one process of batch N·B sees. DDP averages the gradients, the logged
loss is the mean over ranks, and only rank 0 validates, logs and writes files.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device); joins the process group under torchrun."""
    world = world_size()
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():   # long timeout: the last barrier waits for rank 0's scoring
        from datetime import timedelta

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(hours=4))
    return rank, world, device


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module to call in the loop: DDP around `net` under torchrun, else `net` itself."""
    if world_size() == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    # static graph: the same parameters take part every step, so a block the net never uses
    # (MedSegDiff's condition encoder has time layers without a time input) needs no search
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                   static_graph=True)


def on_rank_zero(say: Callable[[str], None]) -> Callable[[str], None]:
    """`say` on rank 0; silence on the other ranks (one log, not N copies)."""
    return say if rank() == 0 else (lambda text: None)


def draw_batch_slice(draw: Callable[[np.random.Generator], tuple[np.ndarray, ...]],
                     stream: Sequence[int], batch: int) -> list[np.ndarray]:
    """This rank's `batch` examples of a global batch: example i is draw(rng) with rng seeded
    by (*stream, i), each array of shape (1, ...); returns them concatenated, (batch, ...)."""
    first = rank() * batch
    examples = [draw(np.random.default_rng([*stream, first + i])) for i in range(batch)]
    return [np.concatenate(parts) for parts in zip(*examples)]


def mean_and_any(value: float, flag: bool, device: torch.device) -> tuple[float, bool]:
    """(mean of `value` over ranks, whether any rank raised `flag`) in one all-reduce of two
    numbers: cheap enough for every step, where the loss is read back to the host anyway."""
    if world_size() == 1:
        return value, flag
    import torch.distributed as dist

    both = torch.tensor([value, float(flag)], dtype=torch.float64, device=device)
    dist.all_reduce(both)
    return float(both[0]) / world_size(), bool(both[1] > 0)


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def finish() -> None:
    """Leave the process group together: every rank waits for the others first (rank 0 may
    still be scoring), since a rank that exits while a peer still uses gloo can abort it."""
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
