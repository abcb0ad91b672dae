"""The step loop the diffusion trainings share (predict-post's denoiser, growth): learning-rate
schedule, optimiser step, EMA, the global batch's loss over ranks, a log row and a checkpoint
every `checkpoint_every` steps, and a checkpoint-and-stop when SIGTERM/SIGUSR1 arrived."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tumorcli.train import distributed, preempt
from tumorcli.train.checkpoint import append_log, save_checkpoint, unlogged_losses
from tumorcli.train.schedule import set_lr


@dataclass(frozen=True)
class Steps:
    stage: str               # the log's stage column and the checkpoint's stage
    total: int
    lr: float
    warmup: int
    checkpoint_every: int
    log: Path
    columns: tuple[str, ...]   # stage, step, lr, train_loss, then NaN-filled extras


def run_steps(net: torch.nn.Module, ema, optimizer, state: dict, steps: Steps,
              loss_at: Callable[[int], torch.Tensor], out: Path, device: torch.device,
              advance: Callable[..., None], say: Callable[[str], None], stop) -> dict | None:
    """Steps state["step"] … steps.total − 1, `loss_at(step)` giving each step's loss; None when
    done (state["step"] = total), the stopped summary when `stop` rose."""
    rank, losses = distributed.rank(), unlogged_losses(state)
    extras = [float("nan")] * (len(steps.columns) - 4)
    for step in range(state["step"], steps.total):
        set_lr(optimizer, step, steps.total, steps.lr, steps.warmup)
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(net)
        loss_value, stop_now = distributed.mean_and_any(float(loss.detach()), stop.requested,
                                                        device)
        losses.append(loss_value)   # the global batch's loss: the mean over ranks
        advance()
        if (step + 1) % steps.checkpoint_every == 0 or step + 1 == steps.total:
            state.update(step=step + 1)
            if rank == 0:
                append_log(steps.log, steps.columns, [steps.stage, step + 1,
                                                      optimizer.param_groups[0]["lr"],
                                                      float(np.mean(losses)), *extras])
                save_checkpoint(out, net, optimizer, state, {"ema": ema.net})
                say(f"{steps.stage} step {step + 1}: loss {np.mean(losses):.4f}")
            losses = []
        if stop_now:   # every rank saw the same flag at this step
            return preempt.checkpoint_and_stop(stop, out, net, optimizer, state, step + 1,
                                               losses, {"ema": ema.net}, stage=steps.stage)
    return None


def autocast(device: torch.device):
    """bf16 mixed precision on CUDA (AMP); full precision on the CPU."""
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
