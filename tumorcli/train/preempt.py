"""Stop a training run cleanly on SIGTERM or SIGUSR1 (a scheduler's preemption or time-limit
warning, e.g. SLURM's `--signal=USR1@120`): the handler only raises a flag; the loop looks at it
after each optimiser step (under torchrun every rank agrees on it in the step's all-reduce),
rank 0 writes a checkpoint, and the command exits with EXIT_STOPPED and
"checkpointed at step N; rerun with --resume". `--resume` continues at step N with the same
batches (for `sbatch --requeue`, the job script adds --resume when OUTPUT/checkpoint.json exists).

torchrun forwards SIGTERM to its workers and waits --shutdown_timeout s (30 by default) for them;
SIGUSR1 must reach the workers themselves (SLURM signals every process of the step).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from torch import nn

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_STOPPED = 0   # a stopped run did what was asked: its checkpoint is complete


class StopRequest:
    """The flag the handlers raise: `signal_name` of the first signal received, else None."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def handle(self, number: int, frame) -> None:
        self.signal_name = self.signal_name or signal.Signals(number).name


@contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = SIGNALS) -> Iterator[StopRequest]:
    """Within the block, `signals` only raise the yielded request's flag; the handlers that
    were there before come back on exit (so a signal after training ends the process as usual).
    Off the main thread, where Python cannot install handlers, the flag never rises."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.signal(number, request.handle) for number in signals}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


def stopped_note(request: StopRequest, step: int, stage: str = "") -> str:
    """The line a stopped run ends with; `stage` names the loop when a run has several."""
    cause = request.signal_name or "SIGTERM/SIGUSR1 on another rank"
    where = f"{stage} step {step}" if stage else f"step {step}"
    return f"stopped by {cause}: checkpointed at {where}; rerun with --resume"


def checkpoint_and_stop(request: StopRequest, out: Path, net: "nn.Module", optimizer,
                        state: dict, step: int, losses: list[float],
                        extra_nets: "dict[str, nn.Module] | None" = None, stage: str = "") -> dict:
    """After optimiser step `step` of a stopped run: rank 0 writes the checkpoint (with the
    losses since the last log row), every rank waits for it and leaves the process group;
    returns the summary, whose "stopped" is the line the command ends with."""
    from tumorcli.train import distributed
    from tumorcli.train.checkpoint import save_stopped

    rank = distributed.rank()
    if rank == 0:
        save_stopped(out, net, optimizer, state, step, losses, extra_nets)
    distributed.barrier()
    distributed.finish()
    return {"output": str(out), "rank": rank, **state, "step": step,
            "stopped": stopped_note(request, step, stage)}
