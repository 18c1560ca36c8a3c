"""A PNG picture of a segmentation over its CT: an axial slice and a coronal slice side by side, drawn
at their physical aspect ratio, with a legend.

Colours come from the SEG's ``RecommendedDisplayCIELabValue`` per segment (:func:`segment_colors`), so
the picture shows what a viewer following the SEG would show. Arrays follow :mod:`inference.volume`:
``(z, y, x)`` with spacing ``(x, y, z)`` mm; slice index 0 is the first slice along the slice normal,
drawn at the bottom of the coronal view (feet down for axial CT in LPS).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from highdicom.color import CIELabColor
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from dicom_node.errors import OverlayError

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]

#: Soft-tissue window (centre, width) in HU.
ABDOMEN_WINDOW = (40.0, 400.0)
_FALLBACK_COLOR: RGB = (255, 255, 0)
_GAP = 8
_LEGEND_ROW = 16


def segment_colors(seg: Dataset) -> dict[int, RGB]:
    """Segment number -> sRGB from each segment's ``RecommendedDisplayCIELabValue`` (segments without
    one are left out)."""
    colors: dict[int, RGB] = {}
    for item in seg.get("SegmentSequence", []):
        lab = item.get("RecommendedDisplayCIELabValue")
        if lab is None or len(lab) != 3:
            continue
        r, g, b = CIELabColor.from_dicom_value((int(lab[0]), int(lab[1]), int(lab[2]))).to_rgb()
        colors[int(item.SegmentNumber)] = (int(r), int(g), int(b))
    return colors


def window_to_uint8(image: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map HU to grey levels 0-255 with a linear window."""
    low = center - width / 2.0
    scaled = (image.astype(np.float32) - low) / max(width, 1e-6)
    out: np.ndarray = (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def blend(gray: np.ndarray, labels: np.ndarray, colors: Mapping[int, RGB], alpha: float) -> np.ndarray:
    """An RGB image: ``gray`` with each non-zero label painted in its colour at opacity ``alpha``."""
    if gray.shape != labels.shape:
        raise OverlayError(f"image {gray.shape} and labels {labels.shape} differ in shape")
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = labels == value
        color = np.asarray(colors.get(int(value), _FALLBACK_COLOR), dtype=np.float32)
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * color
    out: np.ndarray = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return out


def _view(
    gray: np.ndarray, labels: np.ndarray, colors: Mapping[int, RGB], alpha: float, size: tuple[int, int]
) -> Image.Image:
    """One panel resized to ``size`` (width, height): grey bilinear, labels nearest, then blended."""
    grey_img = Image.fromarray(gray, mode="L").resize(size, Image.Resampling.BILINEAR)
    label_img = Image.fromarray(labels.astype(np.uint8), mode="L").resize(size, Image.Resampling.NEAREST)
    return Image.fromarray(blend(np.asarray(grey_img), np.asarray(label_img), colors, alpha), mode="RGB")


def render_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Mapping[int, RGB],
    *,
    spacing: Sequence[float],
    names: Mapping[int, str] | None = None,
    window: tuple[float, float] = ABDOMEN_WINDOW,
    alpha: float = 0.45,
    slice_index: int | None = None,
    height: int = 320,
) -> Image.Image:
    """The overlay picture: axial slice ``slice_index`` (default: the middle one) and the coronal
    slice through the middle row, at ``height`` pixels for the axial view."""
    if image.ndim != 3 or image.shape != labels.shape:
        raise OverlayError(
            f"need (z, y, x) image and labels of one shape, got {image.shape} and {labels.shape}"
        )
    if len(spacing) != 3 or min(float(s) for s in spacing) <= 0:
        raise OverlayError(f"spacing must be 3 positive sizes (x, y, z) mm, got {tuple(spacing)}")
    nz, ny, nx = image.shape
    k = nz // 2 if slice_index is None else int(slice_index)
    if not 0 <= k < nz:
        raise OverlayError(f"slice index {k} outside 0..{nz - 1}")
    sx, sy, sz = (float(s) for s in spacing)
    px_per_mm = height / (ny * sy)
    gray = window_to_uint8(image, *window)

    axial_size = (max(1, round(nx * sx * px_per_mm)), max(1, round(ny * sy * px_per_mm)))
    axial = _view(gray[k], labels[k], colors, alpha, axial_size)
    row = ny // 2
    coronal_size = (max(1, round(nx * sx * px_per_mm)), max(1, round(nz * sz * px_per_mm)))
    # Flip so the last slice (furthest along the normal: head for axial LPS) is at the top.
    coronal = _view(gray[::-1, row, :], labels[::-1, row, :], colors, alpha, coronal_size)

    present = [int(v) for v in np.unique(labels) if v != 0]
    legend_h = _LEGEND_ROW * max(1, len(present)) + _GAP
    width = axial.width + _GAP + coronal.width
    canvas = Image.new("RGB", (width, max(axial.height, coronal.height) + legend_h), (0, 0, 0))
    canvas.paste(axial, (0, 0))
    canvas.paste(coronal, (axial.width + _GAP, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    top = max(axial.height, coronal.height) + _GAP // 2
    for i, value in enumerate(present):
        y = top + i * _LEGEND_ROW
        draw.rectangle((4, y + 2, 14, y + 12), fill=colors.get(value, _FALLBACK_COLOR))
        name = (names or {}).get(value, "")
        draw.text((20, y), f"{value} {name}".strip(), fill=(255, 255, 255), font=font)
    draw.text((4, 2), f"axial {k + 1}/{nz}", fill=(255, 255, 255), font=font)
    draw.text((axial.width + _GAP + 4, 2), "coronal", fill=(255, 255, 255), font=font)
    return canvas


def write_overlay(
    path: Path,
    image: np.ndarray,
    labels: np.ndarray,
    colors: Mapping[int, RGB],
    *,
    spacing: Sequence[float],
    names: Mapping[int, str] | None = None,
    slice_index: int | None = None,
) -> Path:
    """Render (see :func:`render_overlay`) and save as PNG at ``path``."""
    picture = render_overlay(image, labels, colors, spacing=spacing, names=names, slice_index=slice_index)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="PNG")
    logger.info("overlay written to %s (%dx%d)", path, picture.width, picture.height)
    return path
