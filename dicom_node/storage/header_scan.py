"""A quick walk over a received header that vouches for it only where pydicom would accept it too.

:func:`scan_header` walks every element of an explicit or implicit VR little endian data set up to
its pixel data, sequences and items included (iteratively, depth bounded), and checks what pydicom's
full parse (:func:`dicom_node.storage.header.read_header_dataset`) would refuse: an unknown explicit
VR, a number VR (US, SS, UL, SL, FL, FD, SV, UV, AT) whose length is not a multiple of its item size,
lengths past the data, a malformed item or delimiter, nesting beyond ``MAX_NESTING``. It answers the raw
values of the top-level attributes :class:`~dicom_node.storage.header.InstanceHeader` holds, or
raises :class:`Unsure` for anything it does not settle itself: the caller then parses with pydicom,
which gives the answer (a refusal, or pydicom's reading of an odd encoding). It never refuses on its
own, so it refuses exactly what pydicom refuses.

It is unsure, among others, of: an unknown or non-letter VR (pydicom refuses it or switches to
implicit VR), a number VR with a bad length, an undefined length on anything but a sequence, UN that
pydicom would re-read with a dictionary VR, an ambiguous dictionary VR (``US or SS``...) in implicit
VR, items or elements that overrun their parent's length, delimiters out of place, values that run
past the end of the file, and any pydicom setting or hook other than the node's. Values longer than
``DEFER_BYTES`` at the top level are skipped unread, as pydicom defers them; values inside sequences
are all checked, as pydicom reads them all.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from pydicom import config
from pydicom import hooks as pydicom_hooks
from pydicom.datadict import DicomDictionary, dictionary_VR, private_dictionaries, private_dictionary_VR

try:  # the tags whose 'US or SS' pydicom resolves by Pixel Representation alone
    from pydicom.filewriter import _AMBIGUOUS_US_SS_TAGS as _US_OR_SS_TAGS
except ImportError:  # pragma: no cover - another pydicom: such elements go to pydicom
    _US_OR_SS_TAGS = set()

DEFER_BYTES = 64 * 1024  # as dicom_node.storage.header.DEFER_BYTES
MAX_NESTING = 50  # sequences within sequences; deeper ones go to pydicom (which refuses very deep ones)
_MAX_FRAMES = 2 * MAX_NESTING  # a sequence and its item for each level
_CHUNK = 64 * 1024
_MAX_BUFFER = 16 * 1024 * 1024  # one top-level element larger than this goes to pydicom
_FIRST_PIXEL_TAG = 0x7FE00008
_CHARSET = 0x00080005
_PIXEL_REPRESENTATION = 0x00280103
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD

# VRs pydicom converts without ever raising, whatever the bytes (text, dates, OB/OW...)
_TEXT_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM"))
_FREE_VRS = _TEXT_VRS | frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UC", "UI", "UR", "UT"))
# VRs whose value pydicom unpacks as items of this size (it refuses any other length)
_ITEM_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8, "AT": 4}
_EXPLICIT_VRS = {vr.encode(): vr for vr in (*_FREE_VRS, *_ITEM_SIZE, "SQ", "UN")}
_LONG_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"))

_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_IMPLICIT = struct.Struct("<HHL").unpack_from
_U32 = struct.Struct("<L").unpack_from


class Unsure(Exception):
    """The walk does not settle this header: parse it with pydicom."""


class _NeedMore(Exception):
    """A top-level element runs past the bytes read so far."""


def pydicom_reads_as_the_scan_assumes() -> bool:
    """Whether pydicom's settings and hooks are those the walk mirrors (the defaults, any validation
    mode but RAISE)."""
    return (
        config.settings.reading_validation_mode != config.RAISE
        and not config.convert_wrong_length_to_UN
        and config.replace_un_with_known_vr
        and config.settings.infer_sq_for_un_vr
        and config.assume_implicit_vr_switch
        and config.data_element_callback is None
        and not config.use_DS_numpy
        and not config.use_IS_numpy
        and not config.datetime_conversion
        and pydicom_hooks.hooks.raw_element_vr is pydicom_hooks.raw_element_vr
        and pydicom_hooks.hooks.raw_element_value is pydicom_hooks.raw_element_value
        and not pydicom_hooks.hooks.raw_element_kwargs
    )


def scan_header(fp: BinaryIO, implicit: bool, wanted: frozenset[int]) -> dict[int, tuple[str, bytes]]:
    """Walk the data set (no file meta, little endian) at ``fp``'s position up to its pixel data.

    Returns tag -> (VR, raw value) for the top-level elements in ``wanted`` (the VR as pydicom
    would convert it). Raises :class:`Unsure` when pydicom must decide; ``fp`` is then at an
    unspecified position."""
    buf = fp.read(_CHUNK)
    buf_at = 0  # offset of buf[0] from the data set's start
    start = fp.tell() - len(buf)
    eof = len(buf) < _CHUNK
    pos = 0
    found: dict[int, tuple[str, bytes]] = {}
    creators: dict[int, tuple[str, bytes]] = {}
    last = -1
    while True:
        if len(buf) - pos < 12 and not eof:
            buf, buf_at, pos, eof = _more(fp, buf, buf_at, pos, 12)
        if len(buf) - pos < 8:
            if pos == len(buf):
                return found  # the data set ends, without pixel data
            raise Unsure("bytes after the last element")
        tag = (buf[pos + 1] << 24) | (buf[pos] << 16) | (buf[pos + 3] << 8) | buf[pos + 2]
        if tag >= _FIRST_PIXEL_TAG:
            return found  # pixel data (or a delimiter, where pydicom stops too)
        if tag <= last:
            raise Unsure("elements out of order")
        if last < 0:
            looks_implicit = not (0x40 < buf[pos + 4] < 0x5B and 0x40 < buf[pos + 5] < 0x5B)
            if looks_implicit != implicit:
                raise Unsure("the first element's encoding is not the transfer syntax's")
        try:
            vr, length, value_at = _element_header(buf, pos, tag, implicit, creators)
        except _NeedMore:
            raise Unsure("the data ends inside an element's header") from None
        if length == _UNDEFINED:
            _undefined_length_vr(buf, value_at, tag, vr)
            if tag in wanted:
                raise Unsure("a wanted attribute is a sequence")
            try:
                end = _walk(buf, value_at, None, implicit)
            except _NeedMore:
                if eof:
                    raise Unsure("a sequence runs past the end of the data") from None
                buf, buf_at, pos, eof = _more(fp, buf, buf_at, pos, 2 * (len(buf) - pos))
                continue  # walk this element again in the longer buffer
            last, pos = tag, end
            continue
        end = value_at + length
        if length > DEFER_BYTES and tag != _CHARSET:
            if tag in wanted or tag == _PIXEL_REPRESENTATION:
                # pydicom reads (0028,0103) for every sequence it converts: deferred, it fails
                raise Unsure("a wanted attribute is too long")
            last = tag
            if end <= len(buf):
                pos = end
                continue
            fp.seek(start + buf_at + end)
            buf_at += end
            buf = fp.read(_CHUNK)  # past the end, empty: pydicom stops there too
            eof = len(buf) < _CHUNK
            pos = 0
            continue
        if end > len(buf):
            if eof:
                raise Unsure("a value runs past the end of the data")
            buf, buf_at, pos, eof = _more(fp, buf, buf_at, pos, end - pos)
            continue  # read this element again from the longer buffer
        if vr == "SQ":
            if tag in wanted:
                raise Unsure("a wanted attribute is a sequence")
            try:
                _walk(buf, value_at, end, implicit)
            except _NeedMore:
                raise Unsure("a sequence item runs past its sequence") from None
        else:
            _check_value(vr, length)
            if tag in wanted:
                found[tag] = (vr, buf[value_at:end])
            if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
                creators[tag] = (vr, buf[value_at:end])
        last, pos = tag, end


def _more(fp: BinaryIO, buf: bytes, buf_at: int, pos: int, need: int) -> tuple[bytes, int, int, bool]:
    """The buffer from ``pos`` on, with at least ``need`` bytes more read (if there are)."""
    want = max(need, _CHUNK)
    if len(buf) - pos + want > _MAX_BUFFER:
        raise Unsure("an element too long to walk")
    extra = fp.read(want)
    return buf[pos:] + extra, buf_at + pos, 0, len(extra) < want


def _element_header(
    buf: bytes, pos: int, tag: int, implicit: bool, creators: dict[int, tuple[str, bytes]]
) -> tuple[str, int, int]:
    """(VR as pydicom converts it, length, offset of the value) of the element at ``pos``; the VR
    is '' for an implicit VR element of undefined length."""
    if implicit:
        length = _U32(buf, pos + 4)[0]
        return _implicit_vr(tag, creators) if length != _UNDEFINED else "", length, pos + 8
    _, _, raw_vr, length = _EXPLICIT(buf, pos)
    vr = _EXPLICIT_VRS.get(raw_vr)
    if vr is None:
        raise Unsure("an unknown VR")  # pydicom refuses it, or reads it as implicit VR
    if vr in _LONG_VRS:
        if len(buf) < pos + 12:
            raise _NeedMore
        length = _U32(buf, pos + 8)[0]
        value_at = pos + 12
    else:
        value_at = pos + 8
    if vr == "UN" and _dictionary_knows(tag, creators):
        raise Unsure("UN that pydicom reads with the dictionary's VR")
    return vr, length, value_at


def _dictionary_knows(tag: int, creators: dict[int, tuple[str, bytes]]) -> bool:
    """Whether pydicom finds a VR for this tag (in its dictionaries: UN is then re-read with it)."""
    if not tag >> 16 & 1:
        try:
            dictionary_VR(tag)
        except KeyError:
            return False
        return True
    return _private_vr(tag, creators) != "UN"


def _implicit_vr(tag: int, creators: dict[int, tuple[str, bytes]]) -> str:
    """The VR pydicom's ``raw_element_vr`` gives an implicit VR element (or :class:`Unsure`)."""
    if tag >> 16 & 1:  # the DICOM dictionary holds no private tags
        vr = _private_vr(tag, creators)
    else:
        entry = DicomDictionary.get(tag)
        if entry is not None:
            vr = entry[0]
        else:
            try:
                vr = str(dictionary_VR(tag))  # the repeating groups (60xx...)
            except KeyError:
                return "UL" if tag & 0xFFFF == 0 else "UN"
    if vr == "OB or OW" and tag == _PIXEL_DATA:
        return "OB"  # in an item (an icon image): pydicom reads it as OW in implicit VR, any length
    if vr == "US or SS" and tag in _US_OR_SS_TAGS:
        return "US"  # pydicom reads it as US or SS (by Pixel Representation): 2 bytes a value either way
    if vr not in _FREE_VRS and vr not in _ITEM_SIZE and vr not in ("SQ", "UN"):
        raise Unsure(f"VR {vr!r}")  # other ambiguous VRs: pydicom resolves them from other tags
    return vr


def _private_vr(tag: int, creators: dict[int, tuple[str, bytes]]) -> str:
    """A private tag's VR as pydicom looks it up: LO for a creator, the private dictionary's for
    a known creator's element, else UN."""
    element = tag & 0xFFFF
    if 0x10 <= element <= 0xFF:
        return "LO"
    if not element & 0xFF00:
        return "UN"
    creator = creators.get((tag & 0xFFFF0000) | element >> 8)
    if creator is None:
        return "UN"
    vr, raw = creator
    if vr != "LO":
        raise Unsure("a private creator that is not LO")
    name = _plain_text(raw)
    if name not in private_dictionaries:
        return "UN"
    try:
        return str(private_dictionary_VR(tag, name))
    except KeyError:
        return "UN"


def _plain_text(raw: bytes) -> str:
    """An LO value (a private creator) as pydicom decodes it, when that does not depend on the
    character set; :class:`Unsure` otherwise."""
    if not raw.isascii() or b"\\" in raw or b"\x1b" in raw:
        raise Unsure("a private creator that is not plain ASCII")
    return raw.decode("ascii").rstrip("\0 ")


def _undefined_length_vr(buf: bytes, value_at: int, tag: int, vr: str) -> str:
    """An undefined length element must be a sequence, as pydicom reads it; else :class:`Unsure`."""
    if vr == "SQ":
        return vr
    if vr == "":  # implicit VR: the dictionary, else a look at the first item's tag
        try:
            if dictionary_VR(tag) == "SQ":
                return "SQ"
        except KeyError:
            if len(buf) >= value_at + 4 and buf[value_at : value_at + 4] == b"\xfe\xff\x00\xe0":
                return "SQ"
    raise Unsure("an undefined length value that is not a sequence")


def _check_value(vr: str, length: int) -> None:
    size = _ITEM_SIZE.get(vr)
    if size is not None and length % size:
        raise Unsure(f"a {vr} value of {length} bytes")  # pydicom refuses it


def _walk(buf: bytes, pos: int, end: int | None, implicit: bool) -> int:
    """Walk one sequence's items from ``pos`` (its value) to ``end`` (None: to its delimiter);
    return the offset after it. Raises :class:`_NeedMore` at the end of ``buf``."""
    # a frame per open sequence or item: [is_item, its end (None if undefined), the item's
    # private creators, the item's last tag]
    stack: list[list[Any]] = [[False, end, None, 0]]
    size = len(buf)
    while stack:
        frame = stack[-1]
        is_item, limit = frame[0], frame[1]
        if limit is not None and pos >= limit:
            if pos > limit:
                raise Unsure("an element overruns its item or sequence")
            stack.pop()
            continue
        if pos + 8 > size:
            raise _NeedMore
        group, element, length = _IMPLICIT(buf, pos)
        tag = group << 16 | element
        if not is_item:  # an item, or the sequence's end
            if tag == _SEQUENCE_END and limit is None:
                stack.pop()
                pos += 8
                continue
            if tag != _ITEM:
                raise Unsure("a sequence holds something other than items")
            if len(stack) >= _MAX_FRAMES:
                raise Unsure("sequences nested deeply")
            pos += 8
            item_end = None if length == _UNDEFINED else pos + length
            if item_end is not None and limit is not None and item_end > limit:
                raise Unsure("an item overruns its sequence")
            stack.append([True, item_end, {}, -1])
            continue
        if group == 0xFFFE:
            if tag == _ITEM_END and limit is None and length == 0:
                stack.pop()
                pos += 8
                continue
            raise Unsure("a delimiter out of place")
        if tag <= frame[3]:
            raise Unsure("elements out of order")
        frame[3] = tag
        creators = frame[2]
        vr, length, value_at = _element_header(buf, pos, tag, implicit, creators)
        if length == _UNDEFINED:
            _undefined_length_vr(buf, value_at, tag, vr)
            if len(stack) >= _MAX_FRAMES:
                raise Unsure("sequences nested deeply")
            stack.append([False, None, None, 0])
            pos = value_at
            continue
        value_end = value_at + length
        if limit is not None and value_end > limit:
            raise Unsure("an element overruns its item")
        if value_end > size:
            raise _NeedMore
        if vr == "SQ":
            if len(stack) >= _MAX_FRAMES:
                raise Unsure("sequences nested deeply")
            stack.append([False, value_end, None, 0])
            pos = value_at
            continue
        _check_value(vr, length)
        if group & 1 and 0x10 <= element <= 0xFF:
            creators[tag] = (vr, buf[value_at:value_end])
        pos = value_end
    return pos
