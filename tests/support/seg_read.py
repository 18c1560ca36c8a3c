"""An independent reader for the SEGs we write: each frame is placed in the source grid by its own
Image Position (Patient) and orientation, not by references, so a SEG that references the right
instances but sits in the wrong place in patient space fails. :func:`read_seg_labelmap` reads by
references instead, with highdicom."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import Dataset, dcmread

from inference.volume import Geometry


def _item(ds: object, sequence: str) -> object | None:
    seq = getattr(ds, sequence, None)
    return seq[0] if seq else None


def seg_labels_on_grid(path: Path, geometry: Geometry, *, tolerance_mm: float = 0.01) -> np.ndarray:
    """The SEG at ``path`` as a (z, y, x) uint16 label map on ``geometry`` (segment number = label
    value). Raises AssertionError when a frame does not lie exactly on a slice of the grid."""
    ds = dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.get("NumberOfFrames", 1)), int(ds.Rows), int(ds.Columns))
    shared = ds.SharedFunctionalGroupsSequence[0]
    matrix = geometry.matrix()
    spacing = np.asarray(geometry.spacing)
    origin = np.asarray(geometry.origin)
    labels = np.zeros(geometry.shape, dtype=np.uint16)
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        orientation_item = _item(group, "PlaneOrientationSequence") or _item(
            shared, "PlaneOrientationSequence"
        )
        assert orientation_item is not None, f"frame {index + 1}: no orientation"
        orientation = np.asarray(orientation_item.ImageOrientationPatient, dtype=np.float64)  # type: ignore[attr-defined]
        np.testing.assert_allclose(orientation[:3], matrix[:, 0], atol=1e-4)
        np.testing.assert_allclose(orientation[3:], matrix[:, 1], atol=1e-4)
        measures = _item(group, "PixelMeasuresSequence") or _item(shared, "PixelMeasuresSequence")
        if measures is not None:
            row, col = (float(v) for v in measures.PixelSpacing)  # type: ignore[attr-defined]
            np.testing.assert_allclose((col, row), spacing[:2], atol=1e-4)
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        ijk = np.linalg.solve(matrix, position - origin) / spacing  # (x, y, z) voxel coordinates
        assert abs(ijk[0]) * spacing[0] < tolerance_mm and abs(ijk[1]) * spacing[1] < tolerance_mm, (
            f"frame {index + 1} starts off the grid's first voxel: {ijk}"
        )
        k = int(np.rint(ijk[2]))
        assert abs(ijk[2] - k) * spacing[2] < tolerance_mm and 0 <= k < geometry.shape[0], (
            f"frame {index + 1} is not on a slice of the grid: z index {ijk[2]}"
        )
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        mask = frames[index] > 0
        assert not (labels[k][mask] > 0).any(), f"frame {index + 1}: segments overlap on slice {k}"
        labels[k][mask] = segment
    return labels


def read_seg_labelmap(
    seg_path: str | Path, source_headers: Sequence[Dataset], frame_order: Sequence[int] | None = None
) -> np.ndarray:
    """Read a SEG back with highdicom as a (z, y, x) uint16 label map in the source geometry (segment
    number = label value), slice k matching ``source_headers[k]`` (or frame ``frame_order[k]`` of one
    multi-frame header)."""
    seg = hd.seg.segread(str(seg_path))
    first = source_headers[0]
    frames = int(first.get("NumberOfFrames", 1) or 1)
    if len(source_headers) == 1 and frames > 1:
        order = list(frame_order) if frame_order is not None else list(range(frames))
        pixels = seg.get_pixels_by_source_frame(
            str(first.SOPInstanceUID),
            source_frame_numbers=[f + 1 for f in order],
            combine_segments=True,
            assert_missing_frames_are_empty=True,
            dtype=np.uint16,
        )
    else:
        pixels = seg.get_pixels_by_source_instance(
            [str(h.SOPInstanceUID) for h in source_headers],
            combine_segments=True,
            assert_missing_frames_are_empty=True,
            dtype=np.uint16,
        )
    return np.asarray(pixels, dtype=np.uint16)
