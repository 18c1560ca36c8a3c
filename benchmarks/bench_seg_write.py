"""Time and memory of SEG writing for a large study: 512x512x300 label map, 20 labels.

    .venv/bin/python benchmarks/bench_seg_write.py [--slices 300] [--labels 20] [--out /tmp/seg.dcm]

Synthetic CT headers (no pixel data, as inference.series hands them over) and a plausible
ResolvedModel with 20 TotalSegmentator-named segments. Prints build time, write time, file size,
frame count, tracemalloc peak and ru_maxrss growth during build_seg, and for comparison the memory a
float64 one-hot volume (the approach nnunet_serve takes) would need.
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from inference.args import InferenceArgs
from inference.codes import CodeBook
from inference.seg import build_seg, write_seg
from inference.segments import AlgorithmInfo, OutputFields, SegmentSpec
from inference.spec import ResolvedModel

NAMES = (
    "spleen",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "liver",
    "stomach",
    "pancreas",
    "adrenal_gland_right",
    "adrenal_gland_left",
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
    "esophagus",
    "trachea",
    "thyroid_gland",
    "small_bowel",
    "duodenum",
    "colon",
    "urinary_bladder",
    "prostate",
    "heart",
    "aorta",
)


def headers(slices: int, rows: int, columns: int) -> list[Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(slices):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "BENCH", "Bench^Mark", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "", "1"
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber, ds.InstanceNumber = 2, k + 1
        ds.Rows, ds.Columns = rows, columns
        ds.PixelSpacing = [0.8, 0.8]
        ds.SliceThickness = 1.5
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-204.8, -204.8, -450.0 + 1.5 * k]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        out.append(ds)
    return out


def fake_model(n_labels: int) -> ResolvedModel:
    book = CodeBook.default()
    segments = {}
    for value, name in enumerate(NAMES[:n_labels], start=1):
        coding = book.lookup(name)
        assert coding is not None, name
        segments[value] = SegmentSpec(label_value=value, label=name, coding=coding)
    return ResolvedModel(
        id="bench",
        name="Benchmark organs",
        aliases=(),
        model_dir=Path("/nonexistent"),
        dataset_json={},
        labels={v: s.label for v, s in segments.items()},
        channel_names={0: "CT"},
        file_ending=".nii.gz",
        folds={0: ("checkpoint_final.pth",)},
        min_mem=4000,
        default_args=InferenceArgs(),
        segments=segments,
        algorithm=AlgorithmInfo(name="BenchNet", version="1.0"),
        output=OutputFields(),
        version="1.0+000000000000",
        fingerprint="0" * 64,
    )


def label_map(slices: int, rows: int, columns: int, n_labels: int, seed: int = 0) -> np.ndarray:
    """Non-overlapping ellipsoids, one per label, each spanning 20-50 % of the slices (built slice by
    slice, no float volume)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((slices, rows, columns), dtype=np.uint8)
    y, x = np.ogrid[:rows, :columns]
    blobs = []
    for value in range(1, n_labels + 1):
        centre = (
            rng.uniform(0.2, 0.8) * slices,
            rng.uniform(0.15, 0.85) * rows,
            rng.uniform(0.15, 0.85) * columns,
        )
        radii = (rng.uniform(0.1, 0.25) * slices, rng.uniform(15, 70), rng.uniform(15, 70))
        blobs.append((value, centre, radii))
    for k in range(slices):
        plane = labels[k]
        for value, (cz, cy, cx), (rz, ry, rx) in blobs:
            dz = ((k - cz) / rz) ** 2
            if dz >= 1:
                continue
            inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1 - dz
            plane[inside & (plane == 0)] = value
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args()
    z, n = options.slices, options.size

    print(f"label map {n}x{n}x{z}, {options.labels} labels")
    started = time.perf_counter()
    labels = label_map(z, n, n, options.labels)
    source = headers(z, n, n)
    model = fake_model(options.labels)
    present = sorted(int(v) for v in np.unique(labels) if v)
    print(f"inputs made in {time.perf_counter() - started:.1f} s; labels present: {len(present)}")

    build_seg(labels[:2], source[:2], model)  # warm-up: one-time imports and tables out of the figures
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    seg = build_seg(labels, source, model)
    build_s = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert seg is not None

    out = options.out or Path(tempfile.mkdtemp()) / "bench-seg.dcm"
    started = time.perf_counter()
    write_seg(seg, out)
    write_s = time.perf_counter() - started
    frames = int(seg.NumberOfFrames)
    del seg
    gc.collect()

    tracemalloc.start()
    again = build_seg(labels, source, model)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert again is not None
    del again

    mib = 1024 * 1024
    one_hot = labels.size * 8 * len(present)
    pairs = z * len(present)
    print(f"build_seg:              {build_s:6.2f} s  ({frames} frames of {pairs} slice x segment pairs)")
    print(f"write_seg:              {write_s:6.2f} s  ({out.stat().st_size / mib:.1f} MiB at {out})")
    print(f"label map itself:       {labels.nbytes / mib:8.1f} MiB (uint8)")
    print(f"tracemalloc peak:       {peak / mib:8.1f} MiB (Python + numpy allocations during build_seg)")
    growth = (rss_after - rss_before) / 1024
    print(f"ru_maxrss growth:       {growth:8.1f} MiB (process peak, after a warm-up build)")
    per_segment = labels.size * 8 / mib
    print(f"float64 one-hot needs:  {one_hot / mib:8.1f} MiB ({per_segment:.0f} MiB per present segment)")


if __name__ == "__main__":
    main()
