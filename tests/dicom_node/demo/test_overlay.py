"""dicom_node.demo.overlay: colours from the SEG's CIELab values, blending, physical aspect, PNG output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from highdicom.color import CIELabColor
from PIL import Image
from pydicom.dataset import Dataset

from dicom_node.demo.overlay import blend, render_overlay, segment_colors, window_to_uint8, write_overlay
from dicom_node.errors import OverlayError


def _seg_with_colours(colours: dict[int, tuple[int, int, int]]) -> Dataset:
    ds = Dataset()
    items = []
    for number, rgb in colours.items():
        item = Dataset()
        item.SegmentNumber = number
        item.SegmentLabel = f"seg{number}"
        item.RecommendedDisplayCIELabValue = list(CIELabColor.from_rgb(*rgb).value)
        items.append(item)
    ds.SegmentSequence = items
    return ds


def test_segment_colors_round_trip_from_cielab() -> None:
    wanted = {1: (255, 0, 0), 2: (0, 128, 255), 3: (20, 200, 20)}
    got = segment_colors(_seg_with_colours(wanted))
    assert set(got) == {1, 2, 3}
    for number, rgb in wanted.items():
        assert np.max(np.abs(np.subtract(got[number], rgb))) <= 2


def test_window_and_blend() -> None:
    gray = window_to_uint8(np.array([[-1000.0, 40.0, 1000.0]]), 40.0, 400.0)
    assert gray.tolist() == [[0, 128, 255]]
    labels = np.array([[0, 2, 0]], dtype=np.uint8)
    rgb = blend(gray, labels, {2: (255, 0, 0)}, alpha=0.5)
    assert rgb[0, 0].tolist() == [0, 0, 0]  # background untouched
    assert rgb[0, 2].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [192, 64, 64]  # half grey 128, half red
    with pytest.raises(OverlayError, match="differ in shape"):
        blend(gray, labels[:, :2], {}, alpha=0.5)


def test_render_keeps_physical_aspect_and_paints_labels(tmp_path: Path) -> None:
    image = np.full((10, 20, 40), -1000, dtype=np.int16)  # z, y, x
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[:, 5:15, 10:30] = 1
    image[labels == 1] = 40
    spacing = (1.0, 2.0, 4.0)  # x, y, z mm -> axial 40 x 40 mm, coronal 40 x 40 mm
    path = write_overlay(
        tmp_path / "o.png", image, labels, {1: (0, 255, 0)}, spacing=spacing, names={1: "body"}
    )
    with Image.open(path) as png:
        png.verify()
    with Image.open(path) as png:
        assert png.format == "PNG"
        pic = np.asarray(png.convert("RGB"))
    # axial panel is square (40 mm x 40 mm) at 320 px, coronal panel too, plus the gap
    assert pic.shape[1] == 320 + 8 + 320
    centre = pic[160, 160].astype(int)
    assert centre[1] > centre[0] + 50 and centre[1] > centre[2] + 50  # green-tinted tissue
    corner = pic[300, 5]
    assert corner.tolist() == [0, 0, 0]  # air outside the label stays black


def test_render_rejects_bad_input() -> None:
    image = np.zeros((4, 4, 4), dtype=np.int16)
    with pytest.raises(OverlayError, match="one shape"):
        render_overlay(image, np.zeros((4, 4, 3), np.uint8), {}, spacing=(1, 1, 1))
    with pytest.raises(OverlayError, match="slice index"):
        render_overlay(image, np.zeros_like(image, np.uint8), {}, spacing=(1, 1, 1), slice_index=9)
    with pytest.raises(OverlayError, match="spacing"):
        render_overlay(image, np.zeros_like(image, np.uint8), {}, spacing=(1, 0, 1))
