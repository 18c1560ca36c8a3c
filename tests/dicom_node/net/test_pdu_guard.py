"""PDU guard: follows the PDU framing of a byte stream and refuses oversized PDUs unread."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from dicom_node.net.pdu_guard import A_ABORT_INVALID_PARAMETER, PduGuardSocket, PduLimits


@pytest.fixture
def pair() -> Iterator[tuple[PduGuardSocket, socket.socket, list[str]]]:
    ours, peer = socket.socketpair()
    refused: list[str] = []
    guard = PduGuardSocket.wrap(ours, PduLimits(max_pdu=1000), lambda _p, reason: refused.append(reason))
    guard.settimeout(5)
    yield guard, peer, refused
    guard.close()
    peer.close()


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def read_like_pynetdicom(sock: socket.socket) -> bytes:
    """What pynetdicom's DUL does: 6 header bytes, then the body in reads of at most 4096."""
    header = sock.recv(6)
    if len(header) < 6:
        return header
    length = struct.unpack(">I", header[2:])[0]
    body = b""
    while len(body) < length:
        chunk = sock.recv(min(4096, length - len(body)))
        if not chunk:
            break
        body += chunk
    return header + body


def test_pdus_within_limits_pass_unchanged(
    pair: tuple[PduGuardSocket, socket.socket, list[str]],
) -> None:
    guard, peer, refused = pair
    pdus = [pdu(0x01, b"a" * 5000), pdu(0x04, b"b" * 1000), pdu(0x04, b""), pdu(0x05, b"\x00" * 4)]
    peer.sendall(b"".join(pdus))  # one stream: the guard must find each boundary itself
    assert [read_like_pynetdicom(guard) for _ in pdus] == pdus
    assert refused == []


def test_header_split_over_several_segments(
    pair: tuple[PduGuardSocket, socket.socket, list[str]],
) -> None:
    guard, peer, _ = pair
    data = pdu(0x04, b"xyz")
    peer.sendall(data[:2])
    peer.sendall(data[2:])
    assert read_like_pynetdicom(guard) == data


def test_small_reads_at_a_boundary_are_served_from_the_header(
    pair: tuple[PduGuardSocket, socket.socket, list[str]],
) -> None:
    guard, peer, _ = pair
    data = pdu(0x04, b"xyz")
    peer.sendall(data)
    assert guard.recv(2) == data[:2]
    assert guard.recv(4) == data[2:6]
    assert guard.recv(100) == b"xyz"


@pytest.mark.parametrize(
    ("pdu_type", "length"), [(0x04, 1065), (0x04, 64 << 20), (0x01, 2 << 20), (0x07, 100)]
)
def test_oversized_pdu_is_refused_with_an_abort(
    pair: tuple[PduGuardSocket, socket.socket, list[str]], pdu_type: int, length: int
) -> None:
    guard, peer, refused = pair
    peer.sendall(struct.pack(">BBI", pdu_type, 0, length))
    assert guard.recv(6) == b""  # end of stream for pynetdicom
    assert guard.refused
    assert len(refused) == 1 and f"0x{pdu_type:02X}" in refused[0] and str(length) in refused[0]
    peer.settimeout(5)
    assert peer.recv(100) == A_ABORT_INVALID_PARAMETER
    assert peer.recv(100) == b""  # and the connection is shut down


def test_limits() -> None:
    limits = PduLimits(max_pdu=16384)
    assert limits.limit_for(0x04) == 16384 + 64
    assert limits.limit_for(0x01) == 1024 * 1024
    assert limits.limit_for(0x06) == 64
    assert limits.limit_for(0x42) is None  # unknown types: pynetdicom rejects them itself


def test_accepted_tcp_connections_have_nagle_off() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        guard = PduGuardSocket.wrap(accepted, PduLimits(max_pdu=16384))
        try:
            assert guard.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            guard.close()
            client.close()
