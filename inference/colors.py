"""Deterministic recommended display colours for segments.

A segment keeps an explicit colour (spec, dcmqi template, TotalSegmentator's table). Otherwise its
colour is derived from its name alone: the hue comes from SHA-256 of the normalised name, so
"liver" has the same colour in every model and every study, and two names rarely share a hue.
Saturation and value are fixed at levels that stay visible on a grey CT. Colours are stored in the
SEG as DICOM CIELab (``RecommendedDisplayCIELabValue``).
"""

from __future__ import annotations

import colorsys
import hashlib

from highdicom.color import CIELabColor

from inference.codes import snake_key
from inference.segments import RGB

_SATURATION = 0.75
_VALUE = 0.9


def derived_rgb(name: str, label_value: int) -> RGB:
    """A colour for a segment without an explicit one: from the name, or the label value if unnamed."""
    key = snake_key(name) or f"label_{label_value}"
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    r, g, b = colorsys.hsv_to_rgb(hue, _SATURATION, _VALUE)
    return (round(r * 255), round(g * 255), round(b * 255))


def to_cielab(rgb: RGB) -> CIELabColor:
    r, g, b = rgb
    return CIELabColor.from_rgb(r, g, b)
