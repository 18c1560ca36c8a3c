"""The DICOM upper layer's PDUs for the requestor side (PS3.8 9.3), stdlib only.

What the sender (:mod:`dicom_node.net.store_scu`) writes: A-ASSOCIATE-RQ (application context,
presentation contexts, user information: our maximum length, implementation class UID and version
name), P-DATA-TF headers, A-RELEASE-RQ/RP, A-ABORT. What it reads: A-ASSOCIATE-AC (per-context result
and transfer syntax, the peer's maximum length), A-ASSOCIATE-RJ, A-ABORT, P-DATA-TF and A-RELEASE-RQ/RP,
through :class:`PduReader`, which refuses a PDU longer than it was built to take.

Stdlib only, so that ``dicom-node send`` starts without importing pydicom or pynetdicom; the words for
rejection and abort reasons stay pynetdicom's (:mod:`dicom_node.net.dimse_status`, imported only when
there is such a reason to say).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # DICOM Application Context Name (PS3.7 A.2.1)
# The implementation the node announces, on the wire and in the file meta it writes: pynetdicom's
# (its PYNETDICOM_IMPLEMENTATION_UID/VERSION, checked equal by a test), named here without importing it.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.3811.3.0.4"
IMPLEMENTATION_VERSION_NAME = "PYNETDICOM_304"
DEFAULT_MAX_LENGTH = 16382  # the maximum P-DATA-TF length we announce (as pynetdicom does)

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

# A-ASSOCIATE-AC presentation context results (PS3.8 Table 9-18)
ACCEPTANCE = 0
RESULT_WORDS = {
    1: "user rejection",
    2: "no reason (provider rejection)",
    3: "abstract syntax not supported (provider rejection)",
    4: "transfer syntaxes not supported (provider rejection)",
}

# message control header of a PDV (PS3.8 E.2)
DATA_MORE = 0x00
DATA_LAST = 0x02
COMMAND_MORE = 0x01
COMMAND_LAST = 0x03

PDV_HEADER = struct.Struct(">BxIIBB")  # PDU type, length, PDV item length, context ID, control header
PDV_OVERHEAD = 6  # of the PDU length per PDV: item length (4), context ID, control header


class ProtocolError(Exception):
    """The peer sent something the upper layer does not allow here."""


class ConnectionClosed(Exception):
    """The peer closed the connection."""


@dataclass(frozen=True)
class Proposed:
    """A presentation context we propose (odd ID, PS3.8 9.3.2.2)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class Negotiated:
    """An A-ASSOCIATE-AC: the result and transfer syntax of each context, the peer's maximum
    P-DATA-TF length (0: unlimited)."""

    results: dict[int, tuple[int, str]]  # context ID -> (result, transfer syntax)
    max_length: int


def _uid(value: str) -> bytes:
    """A UID in an association PDU: not padded (PS3.8 Annex F, PS3.5 9.1)."""
    return value.encode("ascii")


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16, b" ")


def associate_rq(
    called_ae: str, calling_ae: str, contexts: Sequence[Proposed], max_length: int = DEFAULT_MAX_LENGTH
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2)."""
    items = [_item(0x10, _uid(APPLICATION_CONTEXT))]
    for cx in contexts:
        sub = _item(0x30, _uid(cx.abstract_syntax)) + b"".join(
            _item(0x40, _uid(ts)) for ts in cx.transfer_syntaxes
        )
        items.append(_item(0x20, struct.pack(">BxBx", cx.context_id, 0) + sub))
    user = (
        _item(0x51, struct.pack(">I", max_length))
        + _item(0x52, _uid(IMPLEMENTATION_CLASS_UID))
        + _item(0x55, IMPLEMENTATION_VERSION_NAME.encode("ascii"))
    )
    items.append(_item(0x50, user))
    body = struct.pack(">HH", 0x0001, 0) + _ae(called_ae) + _ae(calling_ae) + bytes(32) + b"".join(items)
    return struct.pack(">BxI", A_ASSOCIATE_RQ, len(body)) + body


def release_rq() -> bytes:
    return struct.pack(">BxII", A_RELEASE_RQ, 4, 0)


def release_rp() -> bytes:
    return struct.pack(">BxII", A_RELEASE_RP, 4, 0)


def abort(source: int = 0, reason: int = 0) -> bytes:
    """An A-ABORT PDU; source 0 (service user, reason 0) or 2 (service provider: 2 unexpected PDU,
    6 invalid parameter value...)."""
    return struct.pack(">BxIBBBB", A_ABORT, 4, 0, 0, source, reason)


def _items(data: bytes, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    while pos < end:
        if end - pos < 4:
            raise ProtocolError("an item header runs past its PDU")
        item_type, length = struct.unpack_from(">BxH", data, pos)
        pos += 4
        if length > end - pos:
            raise ProtocolError(f"item 0x{item_type:02X} runs past its PDU")
        yield item_type, data[pos : pos + length]
        pos += length


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\0 ").strip()


def parse_associate_ac(body: bytes) -> Negotiated:
    """The body (after type and length) of an A-ASSOCIATE-AC PDU."""
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-AC shorter than its fixed fields")
    results: dict[int, tuple[int, str]] = {}
    max_length = 0
    for item_type, value in _items(body, 68, len(body)):
        if item_type == 0x21:
            if len(value) < 4:
                raise ProtocolError("presentation context item shorter than its fields")
            context_id, result = value[0], value[2]
            syntaxes = [_text(v) for t, v in _items(value, 4, len(value)) if t == 0x40]
            results[context_id] = (result, syntaxes[0] if syntaxes else "")
        elif item_type == 0x50:
            for sub_type, sub in _items(value, 0, len(value)):
                if sub_type == 0x51:
                    if len(sub) != 4:
                        raise ProtocolError("maximum length sub-item is not 4 bytes")
                    (max_length,) = struct.unpack(">I", sub)
    return Negotiated(results, max_length)


def parse_reject(body: bytes) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ body."""
    if len(body) != 4:
        raise ProtocolError("A-ASSOCIATE-RJ of the wrong length")
    return body[1], body[2], body[3]


def parse_abort(body: bytes) -> tuple[int, int]:
    """(source, reason) of an A-ABORT body."""
    if len(body) != 4:
        raise ProtocolError("A-ABORT of the wrong length")
    return body[2], body[3]


def pdvs(body: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(context ID, message control header, fragment) of each PDV of a P-DATA-TF body."""
    pos, end = 0, len(body)
    if end == 0:
        raise ProtocolError("P-DATA-TF without a PDV")
    while pos < end:
        if end - pos < 6:
            raise ProtocolError("a PDV header runs past its P-DATA-TF")
        (length,) = struct.unpack_from(">I", body, pos)
        if length < 2 or length > end - pos - 4:
            raise ProtocolError("a PDV runs past its P-DATA-TF")
        yield body[pos + 4], body[pos + 5], body[pos + 6 : pos + 4 + length]
        pos += 4 + length


def pdv_header(context_id: int, control: int, length: int) -> bytes:
    """The PDU and PDV header in front of a fragment of ``length`` bytes (one PDV per PDU)."""
    return PDV_HEADER.pack(P_DATA_TF, length + PDV_OVERHEAD, length + 2, context_id, control)


class PduReader:
    """Reads whole PDUs from a socket through one buffer; a PDU longer than ``limit`` is refused (the
    peer may not send more than we announced; an association PDU is a few kB)."""

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self._sock = sock
        self._limit = limit
        self._buffer = bytearray()

    def read(self) -> tuple[int, bytes]:
        """(PDU type, body). Raises ConnectionClosed, ProtocolError, OSError (TimeoutError)."""
        buffer = self._buffer
        while len(buffer) < 6:
            self._fill()
        pdu_type, length = struct.unpack_from(">BxI", buffer)
        if length > self._limit:
            raise ProtocolError(f"a PDU of {length} bytes (at most {self._limit} expected)")
        while len(buffer) < 6 + length:
            self._fill()
        body = bytes(buffer[6 : 6 + length])
        del buffer[: 6 + length]
        return pdu_type, body

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionClosed
        self._buffer += chunk
