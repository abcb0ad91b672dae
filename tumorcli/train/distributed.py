"""torchrun data parallelism: a no-op in a single process, DDP when WORLD_SIZE > 1.

`torchrun --nproc_per_node N -m tumorcli.cli.app train segment ...` starts N ranks; each draws its
own patches (the rank is part of the sampling seed), gradients are averaged by DDP, and only
rank 0 validates and writes files.
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


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
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module to call in the loop: DDP around `net` under torchrun, else `net` itself."""
    if world_size() == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def finish() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
