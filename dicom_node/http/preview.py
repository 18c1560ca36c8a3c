"""A job's preview picture: the SEG's outlines over the middle slice of the CT it was made from.

Only what the picture needs is decoded: the source series once (:func:`inference.series.load_series`,
which sorts the slices along the normal), and of the SEG only the frames of the middle slice. The
outline of each segment is drawn in the SEG's recommended display colour. The PNG is cached beside
the job's outputs (``preview.png``), so the dashboard's polling costs nothing after the first view.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image

from dicom_node.demo.overlay import ABDOMEN_WINDOW, RGB, segment_colors, window_to_uint8
from dicom_node.errors import OverlayError

logger = logging.getLogger(__name__)

PREVIEW_NAME = "preview.png"
_FALLBACK: RGB = (255, 255, 0)


def outline(labels: np.ndarray) -> np.ndarray:
    """Pixels of a 2-D label map whose 4-neighbourhood holds another value (the segment borders),
    labelled with their own value; 0 elsewhere."""
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    out: np.ndarray = np.where(edge & (centre != 0), centre, 0).astype(labels.dtype)
    return out


def draw_outlines(gray: np.ndarray, labels: np.ndarray, colors: Mapping[int, RGB]) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2)
    border = outline(labels)
    for value in np.unique(border):
        if value == 0:
            continue
        rgb[border == value] = colors.get(int(value), _FALLBACK)
    return rgb


def render_preview(
    source_paths: Sequence[Path],
    seg_path: Path,
    *,
    size: int = 320,
    window: tuple[float, float] = ABDOMEN_WINDOW,
) -> bytes:
    """PNG bytes: outlines of the SEG at ``seg_path`` over the middle slice of the source series."""
    from inference.series import load_series  # heavy (SimpleITK, decoders): only when drawing

    source = load_series(list(source_paths))
    image = source.volume.array
    if image.ndim != 3 or image.shape[0] == 0:
        raise OverlayError(f"the source series has no slices to draw ({image.shape})")
    k = image.shape[0] // 2
    seg = hd.seg.segread(seg_path)
    uid = str(source.sop_instance_uids[k])
    labels = np.zeros(image.shape[1:], dtype=np.uint8)
    referenced = {
        str(ref.ReferencedSOPInstanceUID)
        for series in seg.get("ReferencedSeriesSequence", [])
        for ref in series.get("ReferencedInstanceSequence", [])
    }
    if uid in referenced:
        try:
            labels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uid], combine_segments=True, dtype=np.uint8
            )[0]
        except (KeyError, ValueError, RuntimeError) as exc:  # no frame for this slice: nothing drawn
            logger.debug("preview: no SEG frame for slice %s: %s", uid, exc)
    gray = window_to_uint8(image[k], *window)
    picture = Image.fromarray(draw_outlines(gray, labels, segment_colors(seg)), mode="RGB")
    sx, sy = (float(s) for s in source.volume.geometry.spacing[:2])
    height = size
    width = max(1, round(size * (image.shape[2] * sx) / (image.shape[1] * sy)))
    picture = picture.resize((width, height), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def cached_preview(output_dir: Path, source_paths: Sequence[Path], seg_path: Path) -> bytes:
    target = output_dir / PREVIEW_NAME
    if target.is_file():
        return target.read_bytes()
    data = render_preview(source_paths, seg_path)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return data
