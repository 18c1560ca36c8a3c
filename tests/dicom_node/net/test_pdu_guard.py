"""PDU guard: follows the PDU framing of a byte stream, refuses oversized PDUs unread, ends reads past
their deadline and cuts off messages over the PDV limits."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from dicom_node.net.pdu_guard import A_ABORT_INVALID_PARAMETER, PduGuardSocket, PduLimits, ReadDeadlines
from dicom_node.net.pdv_meter import MessageLimits, PdvMeter


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


# ------------------------------------------------------------------------------- deadlines


def _deadline_pair(
    handshake: float, pdu: float, message_limits: MessageLimits | None = None
) -> tuple[PduGuardSocket, socket.socket, list[str]]:
    ours, peer = socket.socketpair()
    refused: list[str] = []
    guard = PduGuardSocket.wrap(
        ours,
        PduLimits(max_pdu=100_000),
        lambda _p, reason: refused.append(reason),
        deadlines=ReadDeadlines(handshake_seconds=handshake, pdu_seconds=pdu),
        message_limits=message_limits,
    )
    return guard, peer, refused


def test_a_partial_association_request_ends_at_the_handshake_deadline() -> None:
    guard, peer, refused = _deadline_pair(handshake=0.3, pdu=60)
    try:
        peer.sendall(b"\x01")  # one byte of a header, then nothing
        assert read_like_pynetdicom(guard) == b""  # would block forever without a deadline
        assert guard.refused
        assert "association request not received within 0.3 s" in refused[0]
        peer.settimeout(5)
        assert peer.recv(100) == b""  # shut down, no A-ABORT for a peer that never associated
    finally:
        guard.close()
        peer.close()


def test_a_stalled_pdu_body_ends_at_the_pdu_deadline() -> None:
    guard, peer, refused = _deadline_pair(handshake=60, pdu=0.3)
    try:
        peer.sendall(pdu(0x01, b"a" * 10))
        assert read_like_pynetdicom(guard) == pdu(0x01, b"a" * 10)
        peer.sendall(pdu(0x04, b"b" * 100)[:16])  # header and 10 of 100 body bytes
        assert len(read_like_pynetdicom(guard)) == 16  # a short PDU: pynetdicom closes the transport
        assert "PDU type 0x04 not received within 0.3 s (10 of 100 bytes)" in refused[0]
    finally:
        guard.close()
        peer.close()


def test_pdus_that_arrive_in_time_pass_with_deadlines_set() -> None:
    guard, peer, refused = _deadline_pair(handshake=5, pdu=5)
    try:
        pdus = [pdu(0x01, b"a" * 5000), pdu(0x04, b"b" * 10_000), pdu(0x05, b"\x00" * 4)]
        peer.sendall(b"".join(pdus))
        assert [read_like_pynetdicom(guard) for _ in pdus] == pdus
        assert refused == []
    finally:
        guard.close()
        peer.close()


# ------------------------------------------------------------------------------- PDV limits


def pdv(value: bytes, *, command: bool = False, last: bool = False, context: int = 1) -> bytes:
    control = (0x01 if command else 0) | (0x02 if last else 0)
    return struct.pack(">IBB", len(value) + 2, context, control) + value


def test_a_flood_of_empty_pdvs_is_cut_off_with_an_abort() -> None:
    guard, peer, refused = _deadline_pair(
        5, 5, MessageLimits(max_dataset_bytes=1 << 20, max_small_fragments=100)
    )
    try:
        peer.sendall(pdu(0x04, pdv(b"\x00" * 50, command=True, last=True)))
        read_like_pynetdicom(guard)
        peer.sendall(pdu(0x04, pdv(b"") * 101))  # 101 empty data fragments, none the last
        assert len(read_like_pynetdicom(guard)) < 6 + 101 * 6  # cut off inside the PDU
        assert "more than 100 fragments under 1024 bytes" in refused[0]
        peer.settimeout(5)
        assert peer.recv(100) == A_ABORT_INVALID_PARAMETER
    finally:
        guard.close()
        peer.close()


def test_a_data_set_over_the_limit_is_cut_off_while_it_arrives() -> None:
    guard, peer, refused = _deadline_pair(5, 5, MessageLimits(max_dataset_bytes=25_000))
    try:
        peer.sendall(pdu(0x04, pdv(b"c" * 40, command=True, last=True)))
        read_like_pynetdicom(guard)
        peer.sendall(pdu(0x04, pdv(b"d" * 20_000)))
        assert read_like_pynetdicom(guard) == pdu(0x04, pdv(b"d" * 20_000))
        peer.sendall(pdu(0x04, pdv(b"d" * 20_000, last=True)))
        assert read_like_pynetdicom(guard)[6:] != pdv(b"d" * 20_000, last=True)  # never handed on whole
        assert "data set larger than the 25000 bytes allowed" in refused[0]
    finally:
        guard.close()
        peer.close()


def test_many_messages_each_within_the_limits_pass() -> None:
    """Limits are per message: the counts start again after each last fragment."""
    guard, peer, refused = _deadline_pair(
        5, 5, MessageLimits(max_dataset_bytes=25_000, max_small_fragments=3)
    )
    try:
        message = pdu(0x04, pdv(b"c" * 40, command=True, last=True)) + pdu(
            0x04, pdv(b"") * 3 + pdv(b"d" * 20_000, last=True)
        )
        for _ in range(20):
            peer.sendall(message)
            assert read_like_pynetdicom(guard) + read_like_pynetdicom(guard) == message
        assert refused == []
    finally:
        guard.close()
        peer.close()


def test_pdv_headers_split_across_reads_are_followed() -> None:
    meter = PdvMeter(MessageLimits(max_dataset_bytes=1000, max_small_fragments=1))
    meter.start_pdu()
    stream = pdv(b"x" * 600) + pdv(b"y" * 600, last=True)
    refused = [meter.feed(stream[i : i + 1]) for i in range(len(stream))]  # one byte at a time
    assert [r for r in refused if r] == ["data set larger than the 1000 bytes allowed"]
