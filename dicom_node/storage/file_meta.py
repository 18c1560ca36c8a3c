"""A Part 10 file's meta group read without pydicom: what sending it needs (PS3.10 7.1).

The preamble (128 bytes), ``DICM``, then the group 0002 elements, always explicit VR little endian,
until the first element of another group: the data set starts there. :func:`read_file_meta` returns the
Media Storage SOP Class and Instance UIDs, the Transfer Syntax UID and that offset; the sender plans
its presentation contexts from them and sends the bytes from the offset on as they are.

Stdlib only, so that ``dicom-node send`` starts without importing pydicom (its import is most of a
small send's time). :func:`dicom_node.storage.header.read_part10_layout` stays for readers that want
the meta as a pydicom data set.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import UnreadableDatasetError

# VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_MAX_META_BYTES = 64 * 1024  # a meta group is a few hundred bytes
_FIRST_READ = 4096

MEDIA_STORAGE_SOP_CLASS = 0x0002
MEDIA_STORAGE_SOP_INSTANCE = 0x0003
TRANSFER_SYNTAX = 0x0010


class _Incomplete(Exception):
    """The bytes read end inside the meta group (read more)."""


class NotPart10Error(UnreadableDatasetError):
    """No preamble and ``DICM`` prefix: not a DICOM Part 10 file at all."""


@dataclass(frozen=True)
class FileMeta:
    """What the meta group says about a file, and where its data set starts."""

    sop_class: str  # (0002,0002), '' when absent
    sop_instance: str  # (0002,0003), '' when absent
    transfer_syntax: str  # (0002,0010)
    dataset_offset: int


def read_file_meta(path: Path) -> FileMeta:
    """The meta group of the Part 10 file at ``path``.

    Raises :class:`NotPart10Error` when the file has no ``DICM`` prefix, :class:`UnreadableDatasetError`
    when its meta group is malformed or has no Transfer Syntax UID, OSError when it cannot be read."""
    with path.open("rb") as fp:
        head = fp.read(132 + _FIRST_READ)
        if len(head) < 132 or head[128:132] != b"DICM":
            raise NotPart10Error("not a DICOM file")
        try:
            values, offset = _meta_values(head, 132, truncated=len(head) == 132 + _FIRST_READ)
        except _Incomplete:
            head += fp.read(_MAX_META_BYTES - _FIRST_READ)
            try:
                values, offset = _meta_values(head, 132, truncated=len(head) == 132 + _MAX_META_BYTES)
            except _Incomplete:
                raise UnreadableDatasetError("file meta group too long") from None
    syntax = _uid(values.get(TRANSFER_SYNTAX, b""))
    if not syntax:
        raise UnreadableDatasetError("file meta has no Transfer Syntax UID (0002,0010)")
    return FileMeta(
        sop_class=_uid(values.get(MEDIA_STORAGE_SOP_CLASS, b"")),
        sop_instance=_uid(values.get(MEDIA_STORAGE_SOP_INSTANCE, b"")),
        transfer_syntax=syntax,
        dataset_offset=offset,
    )


def _meta_values(data: bytes, pos: int, *, truncated: bool) -> tuple[dict[int, bytes], int]:
    """Element number -> value of the group 0002 elements from ``pos``, and the data set's offset
    (``truncated``: ``data`` is the start of a longer file)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while pos + 4 <= end:
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return out, pos
        if pos + 12 > end and truncated:
            raise _Incomplete
        if pos + 8 > end:
            raise UnreadableDatasetError("file meta ends inside an element header")
        vr = data[pos + 4 : pos + 6]
        if not (vr.isalpha() and vr.isupper()):
            raise UnreadableDatasetError(f"file meta element (0002,{element:04X}) is not explicit VR")
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise UnreadableDatasetError("file meta ends inside an element header")
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8
        if length != 0xFFFFFFFF and pos + length > end and truncated:
            raise _Incomplete
        if length == 0xFFFFFFFF or pos + length > end:
            raise UnreadableDatasetError(f"file meta element (0002,{element:04X}) has no usable length")
        out[element] = data[pos : pos + length]
        pos += length
    if truncated:  # the meta group may go on past what was read
        raise _Incomplete
    return out, pos


def _uid(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\0 ").strip()
