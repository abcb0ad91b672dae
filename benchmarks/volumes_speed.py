"""How many label masks per minute `tumor volumes` measures, end to end, on this machine.

Writes N BraTS-sized masks (240×240×155 uint8, gzip-compressed NIfTI, a lumpy three-label
tumour each) to a temporary folder, then times `tumor volumes FOLDER -o volumes.csv --quiet` as
a real subprocess with --jobs 1 and --jobs 2 (start-up, reading, counting and writing the CSV
included) and the in-process reading + counting alone.

Run: python benchmarks/volumes_speed.py --masks 200 [--size full|small]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

SIZES = {"full": (240, 240, 155), "small": (128, 128, 80)}


def write_masks(folder: Path, count: int, shape) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).parent))
    from evaluate_vs_monai import lumpy_tumour

    rng = np.random.default_rng(0)
    template = [lumpy_tumour(shape, rng, [n * rng.uniform(0.4, 0.6) for n in shape],
                             min(shape) * rng.uniform(0.1, 0.2)) for _ in range(8)]
    paths = []
    for index in range(count):
        name = f"BraTS-GLI-{index + 1:05d}-000"
        path = folder / name / f"{name}-seg.nii.gz"
        path.parent.mkdir()
        nib.save(nib.Nifti1Image(template[index % len(template)], np.diag([1.0, 1.0, 1.0, 1.0])),
                 path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, default=200)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    args = parser.parse_args()

    from tumorcli.metrics.regions import parse_labels
    from tumorcli.metrics.volumes import region_volumes

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        paths = write_masks(folder, args.masks, SIZES[args.size])
        scheme = parse_labels()
        start = time.perf_counter()
        for path in paths:
            region_volumes(path, scheme)
        in_process = time.perf_counter() - start

        end_to_end = {}
        for jobs in (1, 2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tumorcli.cli.app", "volumes", str(folder),
                            "-o", str(folder / "volumes.csv"), "--quiet", "--jobs", str(jobs)],
                           check=True)
            end_to_end[jobs] = time.perf_counter() - start
        rows = len((folder / "volumes.csv").read_text().splitlines()) - 1

    grid = "×".join(map(str, SIZES[args.size]))
    print(f"{args.masks} masks of {grid} uint8 (.nii.gz), {rows} CSV rows")
    print(f"read + count in process : {in_process / args.masks * 1000:6.1f} ms per mask, "
          f"{args.masks / in_process * 60:7.0f} masks per minute")
    for jobs, seconds in end_to_end.items():
        print(f"tumor volumes --jobs {jobs}  : {seconds / args.masks * 1000:6.1f} ms per mask, "
              f"{args.masks / seconds * 60:7.0f} masks per minute (start-up included)")


if __name__ == "__main__":
    main()
