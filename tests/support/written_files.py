"""Reading files another process (dcmtk storescp) may still be writing: a file counts only once it
reads completely, so callers that wait for one poll until it does."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

_UNDEFINED_LENGTH = 0xFFFFFFFF


def read_complete(path: Path, *, pixels: bool = True) -> Dataset | None:
    """``path``'s data set, or None while it cannot be read whole yet: unparseable, a value shorter
    than its declared length (pydicom keeps such a value silently), or, with ``pixels``, no pixel
    data yet (a file cut between two elements parses without error)."""
    try:
        ds = dcmread(path)
        for tag in list(ds.keys()):  # raw elements, unconverted (iterating ds converts them)
            raw = ds.get_item(tag)
            if not isinstance(raw, RawDataElement) or raw.length == _UNDEFINED_LENGTH:
                continue
            if len(raw.value or b"") != raw.length:
                return None
    except Exception:  # pydicom raises many kinds on a half-written file
        return None
    if pixels and not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return None
    return ds


def files_in(folder: Path) -> list[Path]:
    """Every file under ``folder`` (none when it does not exist), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
