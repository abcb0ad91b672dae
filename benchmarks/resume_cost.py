"""Seconds lost to a kill at a random point: a cohort batch (`tumor segment`, shipped Res U-Net)
and a training run (`tumor train segment`, a tiny config), each run uninterrupted --baselines
times (wall time T: their median; kill times are drawn below the shortest, so that they land
in the run), then for K seeded kill times t in (0, T): started, signalled at t, rerun to
completion (the batch as it was; training with --resume when its
checkpoint.json exists, else from scratch in an emptied folder, as examples/slurm does).

seconds lost = (time until the killed process ended + rerun time) − T. The batch is killed
with SIGKILL (nothing can be saved; finished subjects are skipped on the rerun, the one in hand
is redone). Training is stopped both ways: SIGTERM (it checkpoints at the next step and exits,
so no step should be lost) and SIGKILL (it loses back to the last epoch checkpoint). Steps lost
= the optimiser steps the stopped run had done (read off its progress bar, drawn because the
child runs on a pseudo-terminal, or its "checkpointed at step N" line) − the step the rerun
resumed at (the bar redraws 10 times a second: ±1 step). A run that ended on its own before
its kill time lost nothing and is not rerun. Every child runs with OMP_NUM_THREADS=1; the
spread of the baselines shows how much of a figure is the machine's noise.

Run: python benchmarks/resume_cost.py [--kills 3] [--seed 0] [--subjects 6] [--work DIR]
     [-o runs/resume_cost.md]
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TUMOR = [sys.executable, "-m", "tumorcli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
TINY_TRAINING = ["--channels", "8,16,32", "--patch", "32,32,32", "--epochs", "3",
                 "--steps-per-epoch", "20", "--warmup", "5", "--test-cases", "-1"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Stopped:
    """A run signalled `at` s after its start: when it ended, and what it printed."""

    at: float
    ended: float          # s after its start
    returncode: int
    output: str


def timed(command: list[str], check: bool = True) -> tuple[float, str]:
    """(wall seconds, stdout) of a run to completion."""
    began = time.perf_counter()
    done = subprocess.run(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - began
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def stopped_at(command: list[str], at: float, signal_number: int) -> Stopped:
    """Run `command` on a pseudo-terminal (so its progress bar is drawn), send it
    `signal_number` `at` s after its start (SIGKILL to its whole process group), wait."""
    leader, follower = pty.openpty()
    began = time.perf_counter()
    process = subprocess.Popen(command, env=ENV, stdin=subprocess.DEVNULL, stdout=follower,
                               stderr=follower, start_new_session=True)
    os.close(follower)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:   # the child closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process.wait(timeout=max(0.0, at - (time.perf_counter() - began)))
    except subprocess.TimeoutExpired:
        if signal_number == signal.SIGKILL:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.send_signal(signal_number)
        process.wait()
    ended = time.perf_counter() - began
    reader.join(timeout=10)
    os.close(leader)
    text = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    return Stopped(at, ended, process.returncode, text)


def kill_times(totals: list[float], kills: int, seed: int) -> list[float]:
    """K seeded times in (0, the shortest uninterrupted run)."""
    rng = random.Random(seed)
    return [round(rng.uniform(0, min(totals)), 2) for _ in range(kills)]


def finished_first(stop: Stopped) -> bool:
    """The run ended on its own, successfully, before its kill time: no kill happened."""
    return stop.returncode == 0 and stop.ended < stop.at and "checkpointed at" not in stop.output


def untouched(run: str, name: str, stop: Stopped) -> dict:
    return {"run": run, "signal": name, "at": stop.at, "ended": stop.ended, "rerun": 0.0,
            "lost": 0.0, "work": "finished before the kill: nothing to rerun"}


# ---- (a) a cohort batch: tumor segment, SIGKILL ----------------------------------------------

def batch_rows(cohort: Path, work: Path, kills: int, seed: int, baselines: int) -> tuple[list,
                                                                                         list]:
    def command(out: Path) -> list[str]:
        return [*TUMOR, "segment", "-i", str(cohort), "-o", str(out)]

    totals = []
    for index in range(baselines):
        out = work / f"segment-baseline-{index}"
        shutil.rmtree(out, ignore_errors=True)
        totals.append(timed(command(out) + ["-q"])[0])
    total = statistics.median(totals)
    rows = []
    for index, at in enumerate(kill_times(totals, kills, seed)):
        out = work / f"segment-killed-{index}"
        shutil.rmtree(out, ignore_errors=True)
        stop = stopped_at(command(out) + ["-q"], at, signal.SIGKILL)
        if finished_first(stop):
            rows.append(untouched("segment batch", "SIGKILL", stop))
            continue
        rerun, stdout = timed(command(out) + ["--json"])
        statuses = [row["status"] for row in json.loads(stdout)["subjects"]]
        rows.append({"run": "segment batch", "signal": "SIGKILL", "at": at, "ended": stop.ended,
                     "rerun": rerun, "lost": stop.ended + rerun - total,
                     "work": f"rerun: {statuses.count('done')} done, "
                             f"{statuses.count('skipped')} skipped"})
    return totals, rows


# ---- (b) training: tumor train segment, SIGTERM and SIGKILL ----------------------------------

def steps_seen(output: str, total_steps: int) -> int:
    """The optimiser steps a run had done when it ended: its "checkpointed at step N" line, else
    the last N of its progress bar's N/total (0 when neither was drawn)."""
    stopped = re.findall(r"checkpointed at step (\d+)", output)
    if stopped:
        return int(stopped[-1])
    drawn = re.findall(rf"(?<![\d.])(\d+)/{total_steps}(?![\d.])", output)
    return int(drawn[-1]) if drawn else 0


def training_rows(cohort: Path, work: Path, kills: int, seed: int, baselines: int
                  ) -> tuple[list, list]:
    total_steps = int(TINY_TRAINING[TINY_TRAINING.index("--epochs") + 1]) * int(
        TINY_TRAINING[TINY_TRAINING.index("--steps-per-epoch") + 1])

    def command(out: Path) -> list[str]:
        return [*TUMOR, "train", "segment", "--data", str(cohort), "-o", str(out), *TINY_TRAINING]

    totals = []
    for index in range(baselines):
        out = work / f"train-baseline-{index}"
        shutil.rmtree(out, ignore_errors=True)
        totals.append(timed(command(out) + ["-q"])[0])
    total = statistics.median(totals)
    rows = []
    for name, number in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
        for index, at in enumerate(kill_times(totals, kills, seed)):
            out = work / f"train-{name.lower()}-{index}"
            shutil.rmtree(out, ignore_errors=True)
            stop = stopped_at(command(out), at, number)
            if finished_first(stop):
                rows.append(untouched("train segment", name, stop))
                continue
            done = steps_seen(stop.output, total_steps)
            state = out / "checkpoint.json"
            resumed = json.loads(state.read_text())["step"] if state.is_file() else 0
            if not state.is_file():   # died before its first checkpoint: start it again
                shutil.rmtree(out, ignore_errors=True)
            rerun, _ = timed(command(out) + (["--resume"] if resumed else []) + ["-q"])
            how = ("exit 0, checkpointed" if stop.returncode == 0 and "checkpointed at" in
                   stop.output else f"exit {stop.returncode}")
            rows.append({"run": "train segment", "signal": name, "at": at, "ended": stop.ended,
                         "rerun": rerun, "lost": stop.ended + rerun - total,
                         "work": f"{done - resumed} steps lost (at step {done}, resumed at "
                                 f"{resumed}; {how})"})
    return totals, rows


def table(batch: tuple[list, list], training: tuple[list, list], kills: int, seed: int,
          subjects: int) -> str:
    lines = [f"Resume cost: seconds lost to a kill at a random point (K = {kills} seeded kill "
             f"times in (0, T), seed {seed}; OMP_NUM_THREADS=1, "
             f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end)",
             "",
             f"- segment batch: `tumor segment` (resunet) on {subjects} synthetic subjects "
             "(2 mm, atlas space); uninterrupted " + " / ".join(f"{t:.1f}" for t in batch[0])
             + f" s, T = {statistics.median(batch[0]):.1f} s",
             "- train segment: `tumor train segment " + " ".join(TINY_TRAINING) + "` on them; "
             "uninterrupted " + " / ".join(f"{t:.1f}" for t in training[0])
             + f" s, T = {statistics.median(training[0]):.1f} s",
             "",
             "| run | signal | kill at (s) | ended at (s) | rerun (s) | seconds lost | "
             "work lost |",
             "|---|---|---:|---:|---:|---:|---|"]
    rows = batch[1] + training[1]
    for row in rows:
        lines.append(f"| {row['run']} | {row['signal']} | {row['at']:.1f} | {row['ended']:.1f} "
                     f"| {row['rerun']:.1f} | {row['lost']:.1f} | {row['work']} |")
    lines += ["", "| run | signal | T (s) | mean seconds lost | max seconds lost |",
              "|---|---|---:|---:|---:|"]
    for run, signal_name, totals in (("segment batch", "SIGKILL", batch[0]),
                                     ("train segment", "SIGTERM", training[0]),
                                     ("train segment", "SIGKILL", training[0])):
        lost = [row["lost"] for row in rows if (row["run"], row["signal"]) == (run, signal_name)]
        lines.append(f"| {run} | {signal_name} | {statistics.median(totals):.1f} | "
                     f"{statistics.mean(lost):.1f} | {max(lost):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3, help="K kill times per run and signal")
    parser.add_argument("--seed", type=int, default=0, help="of the kill times")
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--baselines", type=int, default=3, help="uninterrupted runs for T")
    parser.add_argument("--cohort", type=Path, help="a cohort to use instead of a new "
                        "synthetic one (its subjects need labels for training)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("-o", "--output", type=Path, help="also write the table here")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="resume_cost-"))
    work.mkdir(parents=True, exist_ok=True)
    cohort = args.cohort
    if cohort is None:
        cohort = work / "cohort"
        if not cohort.is_dir():
            timed([*TUMOR, "synth-cohort", "-o", str(cohort), "--subjects", str(args.subjects),
                   "--sessions", "1", "--space", "atlas", "--size", "small", "--seed", "5",
                   "-q"])
    began = time.perf_counter()
    batch = batch_rows(cohort, work, args.kills, args.seed, args.baselines)
    training = training_rows(cohort, work, args.kills, args.seed, args.baselines)
    report = table(batch, training, args.kills, args.seed, args.subjects) + \
        f"\n({time.perf_counter() - began:.0f} s for the measurements)\n"
    print(report, end="")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
