"""How many connections the SCP holds, and in which phase.

A TCP connection is *pending* from accept until its first PDU (the A-ASSOCIATE-RQ) starts to arrive,
then *associating*, counted against the association limit. Pending connections have their own small
limits, in total and per peer address, so connections that never negotiate (a port scanner, a stalled or
hostile peer) cannot take the association slots of real senders: a connection over a pending limit is
closed at once, before any thread is started for it, and the refusal is logged with the peer address.
A request over the association limit is answered A-ASSOCIATE-RJ (transient, service provider, local
limit exceeded) by the PDU guard (:mod:`dicom_node.net.pdu_guard`).

:class:`ConnectionGate` is the bookkeeping, shared by the server's accept loop and the connections'
threads; :meth:`ConnectionGate.close_pending` and :meth:`ConnectionGate.close_all` let a stopping
server drop stalled peers without waiting for their deadlines.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """``max_associations``: connections past their A-ASSOCIATE-RQ; ``max_pending``: connections that
    have not yet sent one, in total and ``max_pending_per_peer`` from one address."""

    max_associations: int
    max_pending: int
    max_pending_per_peer: int


@dataclass(eq=False)
class Ticket:
    """One admitted connection."""

    peer: tuple[str, int]
    sock: socket.socket | None = None
    associating: bool = False
    closed: bool = field(default=False)
    on_release: Callable[[], None] | None = None  # runs once the connection has ended

    @property
    def peer_text(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"


class ConnectionGate:
    """Admits connections within :class:`ConnectionLimits`; thread-safe."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._tickets: set[Ticket] = set()
        self._pending_by_host: dict[str, int] = {}
        self._pending = 0
        self._associating = 0

    def admit(self, peer: tuple[str, int], on_release: Callable[[], None] | None = None) -> Ticket | None:
        """A ticket for a new connection from ``peer``, or None (logged) if a pending limit is full.
        ``on_release`` runs once the ticket is released (not when it is refused)."""
        host = str(peer[0])
        with self._lock:
            from_host = self._pending_by_host.get(host, 0)
            if from_host >= self.limits.max_pending_per_peer:
                reason = f"{from_host} connections from this address have not sent an association request"
            elif self._pending >= self.limits.max_pending:
                reason = f"{self._pending} connections have not sent an association request"
            else:
                ticket = Ticket((host, int(peer[1])), on_release=on_release)
                self._tickets.add(ticket)
                self._pending += 1
                self._pending_by_host[host] = from_host + 1
                return ticket
        logger.warning("refusing connection from %s:%s: %s (limit reached)", host, peer[1], reason)
        return None

    def start_association(self, ticket: Ticket) -> bool:
        """The connection's A-ASSOCIATE-RQ has begun: move it from pending to associating. False (it
        stays pending) when the association limit is reached."""
        with self._lock:
            if ticket.associating or ticket.closed:
                return ticket.associating
            if self._associating >= self.limits.max_associations:
                count = self._associating
            else:
                self._unpend(ticket)
                ticket.associating = True
                self._associating += 1
                return True
        logger.warning(
            "rejecting association from %s: %d associations open (limit reached)", ticket.peer_text, count
        )
        return False

    def release(self, ticket: Ticket) -> None:
        """The connection has ended."""
        with self._lock:
            if ticket.closed:
                return
            ticket.closed = True
            self._tickets.discard(ticket)
            if ticket.associating:
                self._associating -= 1
            else:
                self._unpend(ticket)
        if ticket.on_release is not None:
            try:
                ticket.on_release()
            except Exception:
                logger.exception("a connection's end callback failed")

    def _unpend(self, ticket: Ticket) -> None:
        self._pending -= 1
        host = ticket.peer[0]
        left = self._pending_by_host.get(host, 1) - 1
        if left > 0:
            self._pending_by_host[host] = left
        else:
            self._pending_by_host.pop(host, None)

    def counts(self) -> tuple[int, int]:
        """(pending, associating) connections now."""
        with self._lock:
            return self._pending, self._associating

    def close_pending(self) -> int:
        """Shut down every connection that has not started an association; returns how many."""
        return self._shut(lambda t: not t.associating)

    def close_all(self) -> int:
        """Shut down every connection (their reads end at once); returns how many."""
        return self._shut(lambda t: True)

    def _shut(self, which: Callable[[Ticket], bool]) -> int:
        with self._lock:
            tickets = [t for t in self._tickets if which(t)]
        for ticket in tickets:
            if ticket.sock is not None:
                with contextlib.suppress(OSError):
                    ticket.sock.shutdown(socket.SHUT_RDWR)
        return len(tickets)
