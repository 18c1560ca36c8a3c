"""Checks of a received DICOM SEG against the series it was made from: the demo's (and the benchmark's)
proof that what came back is a valid segmentation of what was sent.

- read back with highdicom (``segread``), SOP class and Frame of Reference checked;
- references: the Referenced Series Sequence names the source series and lists every source instance;
- the label map rebuilt in the source geometry (segment number = label value, empty frames omitted
  by the writer count as empty);
- optionally dicom3tools' ``dciodvfy``: error and warning lines counted;
- Dice per label against a ground truth label map.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.uid import SegmentationStorage

logger = logging.getLogger(__name__)

DCIODVFY = "/usr/bin/dciodvfy"


@dataclass(frozen=True)
class DciodvfyResult:
    """``dciodvfy`` output split into error and warning lines."""

    errors: list[str]
    warnings: list[str]
    output: str


@dataclass
class SegCheck:
    """What :func:`check_seg` found. ``problems`` is empty when every check passed."""

    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    segments: dict[int, str]
    labels: np.ndarray
    referenced_series_uids: list[str]
    missing_references: list[str]
    dciodvfy: DciodvfyResult | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_dciodvfy() -> str | None:
    """Path of dciodvfy, or None when dicom3tools is not installed."""
    found = shutil.which("dciodvfy")
    if found:
        return found
    return DCIODVFY if Path(DCIODVFY).exists() else None


def run_dciodvfy(path: Path, exe: str | None = None) -> DciodvfyResult | None:
    """Validate ``path`` with dciodvfy; None when it is not installed."""
    exe = exe or find_dciodvfy()
    if exe is None:
        return None
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=300, check=False)
    text = proc.stdout + proc.stderr
    lines = text.splitlines()
    return DciodvfyResult(
        errors=[ln for ln in lines if ln.startswith("Error")],
        warnings=[ln for ln in lines if ln.startswith("Warning")],
        output=text,
    )


def _referenced(seg: hd.seg.Segmentation) -> tuple[list[str], set[str]]:
    series_uids: list[str] = []
    instance_uids: set[str] = set()
    for series_item in seg.get("ReferencedSeriesSequence", []):
        series_uids.append(str(series_item.SeriesInstanceUID))
        for item in series_item.get("ReferencedInstanceSequence", []):
            instance_uids.add(str(item.ReferencedSOPInstanceUID))
    return series_uids, instance_uids


def check_seg(seg_path: Path, source_paths: Sequence[Path], *, validate: bool = True) -> SegCheck:
    """Check the SEG at ``seg_path`` against its source series (``source_paths`` in slice order) and
    rebuild its label map ``(z, y, x)`` in that order (slices the SEG does not reference stay 0)."""
    sources = [dcmread(p, stop_before_pixels=True) for p in source_paths]
    source_uids = [str(ds.SOPInstanceUID) for ds in sources]
    seg = hd.seg.segread(seg_path)
    problems: list[str] = []
    if str(seg.SOPClassUID) != SegmentationStorage:
        problems.append(f"SOP class {seg.SOPClassUID} is not Segmentation Storage")
    source_series = {str(ds.SeriesInstanceUID) for ds in sources}
    series_uids, referenced = _referenced(seg)
    if not source_series & set(series_uids):
        problems.append(f"Referenced Series Sequence {series_uids} does not name {sorted(source_series)}")
    missing = [uid for uid in source_uids if uid not in referenced]
    if missing:
        problems.append(f"{len(missing)} of {len(source_uids)} source instances are not referenced")
    frame_refs = {str(ds.FrameOfReferenceUID) for ds in sources if "FrameOfReferenceUID" in ds}
    if frame_refs and str(seg.FrameOfReferenceUID) not in frame_refs:
        problems.append("Frame of Reference UID differs from the source series")
    segments = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    labels = np.zeros((len(source_uids), rows, columns), dtype=np.uint8)
    known = [i for i, uid in enumerate(source_uids) if uid in referenced]
    if known:
        labels[known] = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[source_uids[i] for i in known],
            combine_segments=True,
            assert_missing_frames_are_empty=True,
            dtype=np.uint8,
        )
    result = run_dciodvfy(seg_path) if validate else None
    if result is not None and result.errors:
        problems.append(f"dciodvfy: {len(result.errors)} error(s), first: {result.errors[0]}")
    return SegCheck(
        path=Path(seg_path),
        sop_instance_uid=str(seg.SOPInstanceUID),
        series_instance_uid=str(seg.SeriesInstanceUID),
        segments=segments,
        labels=labels,
        referenced_series_uids=series_uids,
        missing_references=missing,
        dciodvfy=result,
        problems=problems,
    )


def dice_per_label(predicted: np.ndarray, truth: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """Dice coefficient per label value (1.0 when the label is absent from both)."""
    if predicted.shape != truth.shape:
        raise ValueError(f"label maps differ in shape: {predicted.shape} vs {truth.shape}")
    scores: dict[int, float] = {}
    for value in labels:
        p = predicted == value
        t = truth == value
        total = int(p.sum()) + int(t.sum())
        scores[int(value)] = 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total
    return scores
