"""DICOM series → NIfTI: tumorcli against dcm2niix and SimpleITK, measured in the same run.

A synthetic oblique series (written with pydicom alone) is converted three ways:
  in process : tumorcli `read_dicom_series` vs SimpleITK `ImageSeriesReader` (read only)
  end to end : `tumor convert -o x.nii` vs `dcm2niix -z n` (process start, read, write .nii)
Also prints the largest voxel and affine differences between ours and each peer.
Run: python benchmarks/dicom_read.py [--size small|full] [--runs N]
(small = 256×256×60, full = 512×512×176, the size of a 3D T1 export)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dicom_factory import make_slices, oblique_affine, save  # noqa: E402

SIZES = {"small": (256, 256, 60), "full": (512, 512, 176)}


def best_of(runs: int, action) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_with_simpleitk(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    import dcm2niix

    from tumorcli.io.dicom import read_dicom_series
    from tumorcli.io.volume import load_volume

    shape = SIZES[options.size]
    stored = np.random.default_rng(0).integers(0, 4000, size=shape).astype(np.int16)
    work = Path(tempfile.mkdtemp(prefix="tumor-bench-"))
    try:
        affine = oblique_affine(spacing=(0.9, 0.9, 1.0))
        save(make_slices(stored, affine, slope=0.5, intercept=-100.0), work / "series")
        print(f"series: {shape[0]}×{shape[1]}×{shape[2]} int16, oblique, slope 0.5 "
              f"({sum(p.stat().st_size for p in (work / 'series').iterdir()) / 2**20:.0f} MB)")

        ours_read = best_of(options.runs, lambda: read_dicom_series(work / "series"))
        sitk_read = best_of(options.runs, lambda: read_with_simpleitk(work / "series"))
        print(f"read   tumorcli {ours_read:6.2f} s | SimpleITK {sitk_read:6.2f} s | "
              f"ratio SimpleITK/ours {sitk_read / ours_read:.2f}")

        tumor = shutil.which("tumor") or sys.exit("install tumorcli first: pip install -e .")

        def ours_cli():
            subprocess.run([tumor, "convert", "-i", str(work / "series"), "-o",
                            str(work / "ours.nii"), "--quiet"], check=True, capture_output=True)

        def peer_cli():
            for old in work.glob("peer*"):
                old.unlink()
            subprocess.run([dcm2niix.bin, "-z", "n", "-f", "peer", "-o", str(work),
                            str(work / "series")], check=True, capture_output=True)

        ours_end = best_of(options.runs, ours_cli)
        peer_end = best_of(options.runs, peer_cli)
        print(f"convert tumor {ours_end:6.2f} s | dcm2niix {peer_end:6.2f} s | "
              f"ratio dcm2niix/ours {peer_end / ours_end:.2f}")

        ours = load_volume(work / "ours.nii").reoriented("RAS")
        peer = load_volume(work / "peer.nii").reoriented("RAS")
        print(f"vs dcm2niix: max voxel difference "
              f"{np.abs(ours.array.astype(float) - peer.array.astype(float)).max():.3g}, "
              f"max affine difference {np.abs(ours.affine - peer.affine).max():.2g} mm")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
