"""Helpers that turn phantom series (``dicom_node.demo.phantom.write_ct_series``) into the awkward inputs
``inference.series`` must handle: re-encoded with dcmtk or pydicom, headers edited, enhanced frames
stored out of order with per-frame rescale, files renamed at random."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from tests.support.tools import dcmtk


def rotation(deg_x: float, deg_y: float, deg_z: float = 0.0) -> np.ndarray:
    """Rotation matrix R = Rx @ Ry @ Rz (degrees)."""
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


def oblique_orientation(deg_x: float, deg_y: float) -> tuple[float, ...]:
    """Row and column cosines of the axial plane rotated about x and then y."""
    m = rotation(deg_x, deg_y)
    return (*m[:, 0], *m[:, 1])


def edit_files(paths: Sequence[Path], change: Callable[[Dataset, int], Any]) -> list[Path]:
    """Read each file, let ``change(ds, index)`` edit it, write it back (same transfer syntax)."""
    for index, path in enumerate(paths):
        ds = dcmread(path)
        change(ds, index)
        ds.save_as(path, enforce_file_format=True)
    return list(paths)


def random_names(paths: Sequence[Path]) -> list[Path]:
    """Rename files to random names (returned in the same order as given)."""
    renamed = []
    for path in paths:
        target = path.with_name(f"{uuid.uuid4().hex}.dcm")
        path.rename(target)
        renamed.append(target)
    return renamed


def transcode(paths: Sequence[Path], tool: str, *args: str) -> list[Path]:
    """Re-encode files in place with a dcmtk tool (``dcmcjpeg +e1``, ``dcmcjpls``, ``dcmcrle``...)."""
    exe = dcmtk(tool)
    for path in paths:
        tmp = path.with_suffix(".part")
        subprocess.run([exe, *args, str(path), str(tmp)], check=True, capture_output=True, timeout=60)
        tmp.replace(path)
    return list(paths)


def recompress(paths: Sequence[Path], transfer_syntax: str, **options: Any) -> list[Path]:
    """Re-encode uncompressed files in place with pydicom's encoders (e.g. ``j2k_cr=[20]`` for lossy)."""

    def change(ds: Dataset, _: int) -> None:
        ds.compress(transfer_syntax, generate_instance_uid=False, **options)

    return edit_files(paths, change)


def set_rescale(ds: Dataset, slope: float, intercept: float) -> None:
    """Change a single-frame file's rescale while keeping its real-world values (uncompressed only)."""
    values = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    stored = np.rint((values - intercept) / slope)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError(f"rescale ({slope}, {intercept}) does not fit unsigned 16-bit")
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept


def shuffle_frames(path: Path, order: Sequence[int], rescales: Sequence[tuple[float, float]]) -> None:
    """Rewrite an uncompressed enhanced file so that frame i holds former frame ``order[i]``, stored
    with per-frame Pixel Value Transformation ``rescales[i]`` (real-world values unchanged)."""
    ds = dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    transform = shared.PixelValueTransformationSequence[0]
    values = ds.pixel_array.astype(np.float64) * float(transform.RescaleSlope) + float(
        transform.RescaleIntercept
    )
    del shared.PixelValueTransformationSequence
    old_groups = list(ds.PerFrameFunctionalGroupsSequence)
    frames = []
    groups = []
    for i, source in enumerate(order):
        slope, intercept = rescales[i]
        stored = np.rint((values[source] - intercept) / slope)
        if stored.min() < 0 or stored.max() > 65535:
            raise ValueError(f"rescale ({slope}, {intercept}) does not fit unsigned 16-bit")
        frames.append(stored.astype("<u2"))
        group = old_groups[source]
        item = Dataset()
        item.RescaleSlope = slope
        item.RescaleIntercept = intercept
        item.RescaleType = "HU"
        group.PixelValueTransformationSequence = DicomSequence([item])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(groups)
    ds.PixelRepresentation = 0
    ds.PixelData = np.stack(frames).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
