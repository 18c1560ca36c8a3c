"""Diffusion b-values of DICOM images, and keeping one b-value of a DWI series
(``bvalue_for_filtering``: the images whose b-value is closest to the one asked for).

Where the b-value is read, first found wins:

- DiffusionBValue (0018,9087), the standard attribute;
- GE: (0043,xx39) of private creator ``GEMS_PARM_01``, first value (some versions add 10^9);
- Siemens: (0019,xx0C) of private creator ``SIEMENS MR HEADER``;
- Philips: (2001,xx03) of private creator ``Philips Imaging DD 001``.

Private values may arrive as raw bytes (implicit VR without a dictionary): text is parsed for GE and
Siemens (IS), a little-endian float32 for Philips (FL).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: (group, element offset in the private block, creator substring, value kind)
_PRIVATE = (
    (0x0043, 0x39, "GEMS_PARM_01", "is"),
    (0x0019, 0x0C, "SIEMENS MR HEADER", "is"),
    (0x2001, 0x03, "Philips Imaging DD 001", "fl"),
)
_GE_OFFSET = 1_000_000_000


def _private(ds: Dataset, group: int, offset: int, creator: str) -> Any:
    for block in range(0x10, 0x100):
        tag = (group << 16) | block
        if tag not in ds:
            continue
        value = ds[tag].value
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if creator.lower() in text.strip("\x00 ").lower():
            element = (group << 16) | (block << 8) | offset
            return ds[element].value if element in ds else None
    return None


def _number(value: Any, kind: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        if kind == "fl" and len(value) >= 4:
            return float(struct.unpack("<f", value[:4])[0])
        value = value.decode("latin-1").strip("\x00 ").split("\\")[0]
    elif isinstance(value, list | tuple | pydicom.multival.MultiValue):
        if not value:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def b_value(ds: Dataset) -> float | None:
    """The diffusion b-value of an image (see the module docstring), None when it has none."""
    standard = ds.get("DiffusionBValue")
    if standard is not None and str(standard).strip() != "":
        return float(standard)
    for group, offset, creator, kind in _PRIVATE:
        found = _number(_private(ds, group, offset, creator), kind)
        if found is not None:
            if group == 0x0043 and found >= _GE_OFFSET:
                found -= _GE_OFFSET
            return found
    return None


def closest_b_value_filter(
    paths: Sequence[Path], target: float
) -> tuple[Callable[[Dataset], bool] | None, str | None]:
    """A ``select`` for :func:`inference.series.load_series` keeping the images of the b-value closest
    to ``target``, and a note saying what was kept; ``(None, None)`` when the series has fewer than
    two b-values (nothing to choose)."""
    values: dict[float, int] = {}
    for path in paths:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # unreadable files are reported by load_series itself
            logger.debug("b-value of %s not read: %s", path, exc)
            continue
        value = b_value(header)
        if value is not None:
            values[value] = values.get(value, 0) + 1
    if len(values) < 2:
        return None, None
    chosen = min(values, key=lambda v: (abs(v - target), v))
    note = (
        f"kept the {values[chosen]} image(s) with b={chosen:g} (bvalue_for_filtering {target:g}; "
        f"b-values present: {', '.join(f'{v:g}' for v in sorted(values))})"
    )

    def select(ds: Dataset) -> bool:
        return b_value(ds) == chosen

    return select, note
