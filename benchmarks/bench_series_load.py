"""Load time of ``inference.series.load_series`` against SimpleITK's ImageSeriesReader on the same files.

Writes an uncompressed CT series (default 300 slices of 512 x 512, shuffled file names) to a temporary
folder, then times both loaders alternately (best of ``--repeats``; files are in the page cache
after the first pass) and prints the times and the ratio. Checks that both give the same voxels.

    .venv/bin/python benchmarks/bench_series_load.py [--slices 300] [--size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dicom_node.demo.phantom import write_ct_series
from inference.series import find_dicom_files, load_series


def _image(slices: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(-1024, 2000, size=(slices, size, size), dtype=np.int16)
    return image


def _sitk_load(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-series-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        write_ct_series(_image(args.slices, args.size), folder, spacing=(0.7, 0.7, 1.0), shuffle_names=True)
        print(f"wrote {args.slices} x {args.size}x{args.size} in {time.perf_counter() - started:.1f} s")

        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            series = load_series(find_dicom_files(folder))
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            image = _sitk_load(folder)
            theirs.append(time.perf_counter() - started)

        same = np.array_equal(series.volume.array, sitk.GetArrayFromImage(image).astype(np.float32))
        for name, times in (("load_series (pydicom)", ours), ("SimpleITK ImageSeriesReader", theirs)):
            runs = ", ".join(f"{t:.2f}" for t in times)
            print(f"{name + ':':30s} best {min(times):.2f} s  (runs: {runs})")
        print(f"ratio load_series / SimpleITK: {min(ours) / min(theirs):.2f}  (same voxels: {same})")


if __name__ == "__main__":
    main()
