"""How fast `tumor --help` answers, against a bare Python start and an eager-import CLI.

The peer is the same Typer app built the naive way (heavy libraries imported at module level, as
most research CLIs do), measured in the same run. Run: python benchmarks/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

EAGER = ("import torch, monai, nibabel, SimpleITK, pydicom, highdicom; "
         "from tumorcli.cli.app import app; app(['--help'], standalone_mode=False)")


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    tumor = shutil.which("tumor") or sys.exit("install tumorcli first: pip install -e .")
    bare = median_seconds([sys.executable, "-c", "pass"], runs)
    ours = median_seconds([tumor, "--help"], runs)
    eager = median_seconds([sys.executable, "-c", EAGER], max(3, runs // 2))
    print(f"python -c pass          {bare * 1000:8.0f} ms")
    print(f"tumor --help            {ours * 1000:8.0f} ms   ({ours / bare:.1f}x a bare interpreter)")
    print(f"eager-import CLI --help {eager * 1000:8.0f} ms   (peer; ours is {eager / ours:.1f}x faster)")


if __name__ == "__main__":
    main()
