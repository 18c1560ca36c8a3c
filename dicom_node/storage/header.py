"""The one place that reads instance headers, without touching pixel data.

:func:`read_part10_header` reads the few leading attributes filing needs from a Part 10 file: the
C-STORE handler (pynetdicom's streamed file), the drop folder and the spool reconciliation all use it,
so they parse UIDs, texts and the expected count the same way. Parsing stops at (0020,1002) Images
in Acquisition: every attribute read there lies before it, and nothing past it (pixel data
included) is parsed; other values are skipped by seeking. :func:`read_routing_header` reads every
attribute before the pixel data, for rules that match any tag (completion, ``rules explain``).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import dcmread, read_dataset, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_node.errors import MissingAttributeError, UnreadableDatasetError
from dicom_node.uids import require_uid

_SOP_CLASS = 0x00080016
_SOP_INSTANCE = 0x00080018
_MODALITY = 0x00080060
_SERIES_DESCRIPTION = 0x0008103E
_STUDY = 0x0020000D
_SERIES = 0x0020000E
_IMAGES_IN_ACQUISITION = 0x00201002
_WANTED: list[BaseTag | int] = [
    _SOP_CLASS,
    _SOP_INSTANCE,
    _MODALITY,
    _SERIES_DESCRIPTION,
    _STUDY,
    _SERIES,
    _IMAGES_IN_ACQUISITION,
]
_TS_TAG = 0x00020010

# A deflated header is inflated only this far (decompression bombs inflate ~2000:1).
MAX_INFLATED_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class InstanceHeader:
    """Header values as found; empty strings where an attribute is absent. Call :meth:`validated`
    before building paths or records from it."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str = ""
    series_description: str = ""
    expected_count: int | None = None

    def validated(self) -> InstanceHeader:
        """Return self if all four UIDs are present and valid.

        Raises :class:`MissingAttributeError` for an absent UID and
        :class:`~dicom_node.errors.InvalidUIDError` for one that may not be used in a path."""
        fields = (
            ("SOP Class UID (0008,0016)", self.sop_class_uid),
            ("SOP Instance UID (0008,0018)", self.sop_instance_uid),
            ("Study Instance UID (0020,000D)", self.study_uid),
            ("Series Instance UID (0020,000E)", self.series_uid),
        )
        missing = [name for name, value in fields if not value]
        if missing:
            raise MissingAttributeError(f"missing {', '.join(missing)}")
        for name, value in fields:
            require_uid(value, name)
        return self


def _stop_after_wanted(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag > _IMAGES_IN_ACQUISITION


def _encoding_of(transfer_syntax: str) -> tuple[bool, bool]:
    """(is_implicit_VR, is_little_endian); unknown (private) syntaxes are read as explicit LE."""
    try:
        uid = UID(transfer_syntax)
        return bool(uid.is_implicit_VR), bool(uid.is_little_endian)
    except ValueError:
        return False, True


def _inflate_prefix(fp: BinaryIO, limit: int) -> BinaryIO:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    while len(out) < limit:
        chunk = fp.read(64 * 1024)
        if not chunk:
            break
        try:
            out += inflater.decompress(chunk, limit - len(out))
        except zlib.error as exc:
            raise UnreadableDatasetError(f"deflated data set cannot be inflated: {exc}") from exc
        if inflater.eof:
            break
    return io.BytesIO(bytes(out))


def _text(ds: Dataset, tag: int) -> str:
    """The raw value of a UI/CS element as text, without pydicom's value conversion (whose warnings
    about malformed UIDs would only be noise here: require_uid judges them)."""
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1").rstrip("\x00 ").lstrip(" ")
    return str(value).strip()


def read_header(fp: BinaryIO, transfer_syntax: str) -> InstanceHeader:
    """Read the wanted attributes of a data set (no file meta) from ``fp``'s position.

    ``fp`` is left at an unspecified position. Raises :class:`UnreadableDatasetError` if the bytes
    cannot be parsed."""
    implicit, little = _encoding_of(transfer_syntax)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        fp = _inflate_prefix(fp, MAX_INFLATED_HEADER_BYTES)
    try:
        ds = read_dataset(
            fp,
            implicit,
            little,
            stop_when=_stop_after_wanted,
            specific_tags=_WANTED,
        )
        description = ds.get("SeriesDescription", "")
        count_text = _text(ds, _IMAGES_IN_ACQUISITION)
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise UnreadableDatasetError(f"data set header cannot be parsed: {exc}") from exc
    expected: int | None = None
    try:
        value = int(float(count_text)) if count_text else 0
        expected = value if value > 0 else None
    except ValueError:
        expected = None
    return InstanceHeader(
        sop_class_uid=_text(ds, _SOP_CLASS),
        sop_instance_uid=_text(ds, _SOP_INSTANCE),
        study_uid=_text(ds, _STUDY),
        series_uid=_text(ds, _SERIES),
        modality=_text(ds, _MODALITY),
        series_description=str(description or "").strip(),
        expected_count=expected,
    )


@dataclass(frozen=True)
class Part10Layout:
    """Where a Part 10 file's data set starts and how it is encoded."""

    dataset_offset: int
    transfer_syntax: str
    file_meta: Dataset


def read_part10_layout(fp: BinaryIO) -> Part10Layout:
    """Read the preamble and file meta of a Part 10 file at ``fp``'s start; leaves ``fp`` at the
    data set. Raises :class:`UnreadableDatasetError` if it is not a Part 10 file."""
    try:
        preamble = read_preamble(fp, force=False)
        # the file meta group is always explicit VR little endian; stop (rewound) at the first
        # element of another group
        meta = read_dataset(fp, False, True, stop_when=_stop_after_meta)
    except Exception as exc:
        raise UnreadableDatasetError(f"not a DICOM Part 10 file: {exc}") from exc
    if preamble is None:
        raise UnreadableDatasetError("not a DICOM Part 10 file: no preamble and DICM prefix")
    ts = _text(meta, _TS_TAG)
    if not ts:
        raise UnreadableDatasetError("file meta has no Transfer Syntax UID (0002,0010)")
    return Part10Layout(dataset_offset=fp.tell(), transfer_syntax=ts, file_meta=meta)


def _stop_after_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag.group != 0x0002


def read_part10_header(fp: BinaryIO) -> tuple[Part10Layout, InstanceHeader]:
    """The layout and the (not yet validated) header of the Part 10 file at ``fp``'s start; leaves
    ``fp`` at the start of the data set. Raises :class:`UnreadableDatasetError`."""
    layout = read_part10_layout(fp)
    header = read_header(fp, layout.transfer_syntax)
    fp.seek(layout.dataset_offset)
    return layout, header


def read_routing_header(path: Path) -> Dataset:
    """Every attribute of the Part 10 file at ``path`` before its pixel data (rules may match any
    tag). Raises :class:`UnreadableDatasetError`, or OSError when the file cannot be opened."""
    try:
        return dcmread(path, stop_before_pixels=True)
    except OSError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise UnreadableDatasetError(f"cannot read the header of {path}: {exc}") from exc
