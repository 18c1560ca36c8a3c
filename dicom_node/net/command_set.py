"""DIMSE command sets (PS3.7 9.3, E.1) without pydicom: group 0000, implicit VR little endian.

A command set is a handful of elements of fixed kinds (US, UL, UI, AE, LO); encoding and decoding them
here costs microseconds, where a pydicom data set costs most of a small instance's time on the send
and receive fast paths. Only this module knows the byte layout: callers give and get element numbers
(the element part of the (0000,eeee) tag) and Python values.

Stdlib only, so that ``dicom-node send`` starts without importing pydicom.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

# element numbers of group 0000 (PS3.7 E.1)
AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_RESPONDED_TO = 0x0120
PRIORITY = 0x0700
DATA_SET_TYPE = 0x0800
STATUS = 0x0900
OFFENDING_ELEMENT = 0x0901
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000
MOVE_ORIGINATOR_AE = 0x1030
MOVE_ORIGINATOR_ID = 0x1031

# command field values
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030

NO_DATA_SET = 0x0101  # Command Data Set Type: any other value means a data set follows

_US_ELEMENTS = frozenset(
    {COMMAND_FIELD, MESSAGE_ID, MESSAGE_ID_RESPONDED_TO, PRIORITY, DATA_SET_TYPE, STATUS, MOVE_ORIGINATOR_ID}
)
_MAX_COMMAND_BYTES = 64 * 1024  # a command set is a few hundred bytes; anything this big is not one


class CommandSetError(ValueError):
    """Bytes that are not a well-formed command set."""


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def ul(value: int) -> bytes:
    return struct.pack("<I", value)


def uid(value: str) -> bytes:
    """A UI value: ASCII, padded to even length with NUL."""
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def text(value: str) -> bytes:
    """An AE/LO value: ASCII, padded to even length with a space."""
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def encode(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """A command set from (element number, encoded value) pairs, with its group length first."""
    body = b"".join(
        struct.pack("<HHI", 0x0000, element, len(value)) + value for element, value in sorted(elements)
    )
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def decode(raw: bytes | bytearray | memoryview) -> dict[int, bytes]:
    """Element number -> raw value of every element of a command set.

    Raises :class:`CommandSetError` when the bytes are not one: an element outside group 0000, a
    length running past the end, or an oversized set."""
    data = bytes(raw)
    if len(data) > _MAX_COMMAND_BYTES:
        raise CommandSetError(f"command set of {len(data)} bytes")
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise CommandSetError("command set ends inside an element header")
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if group != 0x0000:
            raise CommandSetError(f"element ({group:04X},{element:04X}) in a command set")
        if length > end - pos:
            raise CommandSetError(f"element (0000,{element:04X}) runs past the command set")
        out[element] = data[pos : pos + length]
        pos += length
    return out


def get_us(command: dict[int, bytes], element: int) -> int | None:
    """An unsigned short value, or None when absent."""
    value = command.get(element)
    if value is None:
        return None
    if len(value) != 2:
        raise CommandSetError(f"(0000,{element:04X}) is {len(value)} bytes, not a US")
    return int(struct.unpack("<H", value)[0])


def get_text(command: dict[int, bytes], element: int) -> str:
    """A UI/AE/LO value without its padding ('' when absent)."""
    value = command.get(element)
    if value is None:
        return ""
    return value.decode("ascii", "replace").rstrip("\0 ").lstrip(" ")


def store_request(message_id: int, sop_class: str, sop_instance: str, priority: int = 0x0000) -> bytes:
    """A C-STORE-RQ command set announcing a data set."""
    return encode(
        [
            (AFFECTED_SOP_CLASS, uid(sop_class)),
            (COMMAND_FIELD, us(C_STORE_RQ)),
            (MESSAGE_ID, us(message_id)),
            (PRIORITY, us(priority)),
            (DATA_SET_TYPE, us(0x0001)),
            (AFFECTED_SOP_INSTANCE, uid(sop_instance)),
        ]
    )


def store_response(
    message_id: int, sop_class: str, sop_instance: str, status: int, comment: str = ""
) -> bytes:
    """A C-STORE-RSP command set; ``comment`` (an Error Comment, LO) only when not empty."""
    elements = [
        (COMMAND_FIELD, us(C_STORE_RSP)),
        (MESSAGE_ID_RESPONDED_TO, us(message_id)),
        (DATA_SET_TYPE, us(NO_DATA_SET)),
        (STATUS, us(status)),
    ]
    if sop_class:
        elements.append((AFFECTED_SOP_CLASS, uid(sop_class)))
    if sop_instance:
        elements.append((AFFECTED_SOP_INSTANCE, uid(sop_instance)))
    if comment:
        elements.append((ERROR_COMMENT, text(comment[:64])))
    return encode(elements)


def echo_request(message_id: int, sop_class: str = "1.2.840.10008.1.1") -> bytes:
    """A C-ECHO-RQ command set."""
    return encode(
        [
            (AFFECTED_SOP_CLASS, uid(sop_class)),
            (COMMAND_FIELD, us(C_ECHO_RQ)),
            (MESSAGE_ID, us(message_id)),
            (DATA_SET_TYPE, us(NO_DATA_SET)),
        ]
    )


def has_data_set(command: dict[int, bytes]) -> bool:
    """Whether a data set follows the command (Command Data Set Type other than 0x0101)."""
    kind = get_us(command, DATA_SET_TYPE)
    if kind is None:
        raise CommandSetError("no Command Data Set Type (0000,0800)")
    return kind != NO_DATA_SET
