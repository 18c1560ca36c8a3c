"""Connection limits: pending connections (total and per peer) and associations counted apart."""

from __future__ import annotations

import socket

from dicom_node.net.conn_limits import ConnectionGate, ConnectionLimits


def gate(associations: int = 2, pending: int = 3, per_peer: int = 2) -> ConnectionGate:
    return ConnectionGate(ConnectionLimits(associations, pending, per_peer))


def test_pending_connections_are_limited_per_peer_address() -> None:
    g = gate()
    first, second = g.admit(("10.0.0.1", 1)), g.admit(("10.0.0.1", 2))
    assert first is not None and second is not None
    assert g.admit(("10.0.0.1", 3)) is None  # third from the same address
    assert g.admit(("10.0.0.2", 1)) is not None  # another address still gets in
    g.release(first)
    assert g.admit(("10.0.0.1", 4)) is not None  # a slot came back


def test_pending_connections_are_limited_in_total() -> None:
    g = gate(pending=3, per_peer=3)
    assert all(g.admit((f"10.0.0.{i}", 1)) is not None for i in range(3))
    assert g.admit(("10.0.0.9", 1)) is None
    assert g.counts() == (3, 0)


def test_associating_connections_leave_the_pending_count() -> None:
    g = gate(associations=1, pending=2, per_peer=2)
    a, b = g.admit(("10.0.0.1", 1)), g.admit(("10.0.0.1", 2))
    assert a is not None and b is not None
    assert g.admit(("10.0.0.1", 3)) is None
    assert g.start_association(a)
    assert g.counts() == (1, 1)
    assert g.admit(("10.0.0.1", 3)) is not None  # a's pending slot is free again
    assert not g.start_association(b)  # the association limit is reached
    g.release(a)
    assert g.start_association(b)
    g.release(b)
    g.release(b)  # twice is harmless
    assert g.counts() == (1, 0)


def test_close_pending_shuts_only_connections_without_an_association() -> None:
    g = gate()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        waiting, associated = g.admit(("10.0.0.1", 1)), g.admit(("10.0.0.2", 1))
        assert waiting is not None and associated is not None
        waiting.sock, associated.sock = pairs[0][0], pairs[1][0]
        assert g.start_association(associated)
        assert g.close_pending() == 1
        pairs[0][1].settimeout(5)
        assert pairs[0][1].recv(10) == b""  # the peer sees the connection closed
        pairs[1][1].setblocking(False)
        try:
            pairs[1][1].recv(10)
            raise AssertionError("the associated connection was shut down by close_pending")
        except BlockingIOError:
            pass  # still open: nothing to read, no end of stream
        assert g.close_all() == 2
        pairs[1][1].settimeout(5)
        assert pairs[1][1].recv(10) == b""
    finally:
        for x, y in pairs:
            x.close()
            y.close()
