"""The SCP's association server: admits each accepted connection through a
:class:`~dicom_node.net.conn_limits.ConnectionGate`, wraps it in a
:class:`~dicom_node.net.pdu_guard.PduGuardSocket`, runs pynetdicom's association on it with the receive
fast path (:mod:`dicom_node.net.fastpath`) and frees the connection's slot when the association ends.
Stopping it drops stalled peers instead of waiting for them
(:meth:`GuardedAssociationServer.end_connections`).

With several receive processes (``node.receive_processes``) only the node's server listens: its
:class:`ConnectionHandoff` (:class:`~dicom_node.net.receive_processes.ReceiveProcesses`) may pass each
accepted connection to another process, whose server (made with ``listen=False``) takes it in through
:meth:`GuardedAssociationServer.serve_connection`, the one place where an accepted connection enters
processing in either process.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from pynetdicom import evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.config import NodeSection
from dicom_node.net import fastpath
from dicom_node.net.conn_limits import ConnectionGate, ConnectionLimits, Ticket
from dicom_node.net.direct_store import StoreTarget
from dicom_node.net.pdu_guard import PduGuardSocket, PduLimits, ReadDeadlines, RefusedCallback
from dicom_node.net.pdv_meter import MessageLimits

logger = logging.getLogger(__name__)

Ended = Callable[[], None]


class ConnectionHandoff(Protocol):
    """Where the listening server may send an accepted connection instead of serving it."""

    def hand_off(self, sock: socket.socket, address: tuple[str, int]) -> Ended | None:
        """None: another process serves the connection (this process's copy of it is closed);
        otherwise this process serves it and calls the returned function once it has ended."""
        ...


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler for a connection the server has admitted and guarded; the
    handler's thread waits for the association to end, then gives the connection's slot back."""

    server: GuardedAssociationServer

    def handle(self) -> None:
        ticket = self.server.take_ticket(self.request)
        try:
            sock = self.request
            if isinstance(sock, ssl.SSLSocket) and not _handshake(
                sock, self.client_address, self.server.handshake_timeout
            ):
                return
            assoc = self._create_association()
            if self.server.fast_path:
                fastpath.install(assoc, self.server.store_target)
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            assoc.join()
        finally:
            if ticket is not None:
                self.server.gate.release(ticket)


class GuardedAssociationServer(ThreadedAssociationServer):
    """A threaded association server whose connections are admitted by a :class:`ConnectionGate`
    and PDU-guarded.

    Made by ``AE.make_server(address, ..., server_class=GuardedAssociationServer,
    pdu_limits=PduLimits(...), connection_limits=..., deadlines=..., message_limits=...)``; run with
    ``serve_forever`` and stopped with :meth:`shutdown`. Connection threads are daemons and are not
    joined on close: a stalled peer never holds up a stopping node."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        *args: Any,
        pdu_limits: PduLimits,
        on_pdu_refused: RefusedCallback | None = None,
        connection_limits: ConnectionLimits | None = None,
        deadlines: ReadDeadlines | None = None,
        message_limits: MessageLimits | None = None,
        fast_path: bool = True,
        store_target: StoreTarget | None = None,
        handshake_timeout: float = 30.0,
        listen: bool = True,
        **kwargs: Any,
    ) -> None:
        # listen=False: no socket is bound; connections come only through serve_connection
        self.listening = listen
        self.handoff: ConnectionHandoff | None = None
        self._closed = False
        self.fast_path = fast_path
        self.store_target = store_target
        self.handshake_timeout = handshake_timeout
        self.pdu_limits = pdu_limits
        self.on_pdu_refused = on_pdu_refused
        self.deadlines = deadlines
        self.message_limits = message_limits
        limits = connection_limits or ConnectionLimits(
            max_associations=1 << 20, max_pending=1 << 20, max_pending_per_peer=1 << 20
        )
        self.gate = ConnectionGate(limits)
        self._tickets: dict[Any, Ticket] = {}
        self._tickets_lock = threading.Lock()
        kwargs["request_handler"] = GuardedRequestHandler
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.listening:
            super().server_bind()

    def server_activate(self) -> None:
        if self.listening:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection (the TLS layer is added by :meth:`serve_connection`)."""
        listener = cast(socket.socket, self.socket)
        return listener.accept()

    def process_request(self, request: Any, client_address: Any) -> None:
        """An accepted connection: handed to another process if the :attr:`handoff` says so,
        served here otherwise."""
        on_end = None
        if self.handoff is not None:
            on_end = self.handoff.hand_off(request, client_address)
            if on_end is None:
                return  # another process serves it
        self.serve_connection(request, client_address, on_end=on_end)

    def serve_connection(
        self, sock: socket.socket, client_address: Any, *, on_end: Ended | None = None
    ) -> None:
        """Serve a connected socket: admit (or refuse) it, wrap it in the guard (under TLS: the TLS
        layer, whose handshake is left to the connection's own thread, not the accept loop, where
        one silent client would stall every other connection), start its thread. ``on_end`` runs
        once the connection has ended (refused, failed or its association over)."""
        on_end = _once(on_end)
        try:
            if self._closed:
                raise ConnectionAbortedError("the server has stopped")
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            self._admit(sock, client_address, on_end)
        except Exception:
            if not self._closed:
                self.handle_error(sock, client_address)
            self.shutdown_request(sock)
            on_end()

    def _admit(self, request: Any, client_address: Any, on_end: Ended) -> None:
        ticket = self.gate.admit(client_address, on_release=on_end)
        if ticket is None:
            self._report(
                f"{client_address[0]}:{client_address[1]}",
                "connection refused: too many connections without an association request",
            )
            self.shutdown_request(request)
            on_end()
            return
        if isinstance(request, socket.socket) and not isinstance(request, ssl.SSLSocket):
            request = PduGuardSocket.wrap(
                request,
                self.pdu_limits,
                self.on_pdu_refused,
                deadlines=self.deadlines,
                message_limits=self.message_limits,
                gate=self.gate,
                ticket=ticket,
            )
        else:
            # the guard reads the raw stream; under TLS that is ciphertext: PDU sizes and read
            # deadlines are not guarded on TLS connections (the handshake has its own deadline)
            ticket.sock = request
            if not self.gate.start_association(ticket):
                self.gate.release(ticket)
                self.shutdown_request(request)
                return
        with self._tickets_lock:
            self._tickets[request] = ticket
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._tickets_lock:
                self._tickets.pop(request, None)
            self.gate.release(ticket)
            raise

    def take_ticket(self, request: Any) -> Ticket | None:
        with self._tickets_lock:
            return self._tickets.pop(request, None)

    def _report(self, peer: str, reason: str) -> None:
        if self.on_pdu_refused is not None:
            try:
                self.on_pdu_refused(peer, reason)
            except Exception:
                logger.exception("refusal callback failed")

    def end_connections(self, grace_seconds: float) -> None:
        """After :meth:`shutdown`: close connections that have not associated at once, give
        established associations up to ``grace_seconds`` to end (an instance being filed is always
        finished), then shut their connections and abort them. Waits for no stalled peer."""
        closed = self.gate.close_pending()
        deadline = time.monotonic() + grace_seconds
        assocs = [a for a in self.active_associations if a.is_alive()]
        while any(a.is_alive() and a.is_established for a in assocs) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [a for a in assocs if a.is_alive()]
        established = [a for a in left if a.is_established]
        if closed or left:
            logger.warning(
                "at shutdown: %d connections without an association closed, %d associations aborted",
                closed,
                len(established),
            )
        self.gate.close_all()  # reads stalled on a peer end now, not at their deadline
        for assoc in left:
            assoc.abort()  # also ends its DUL thread
        # a connection closed before its request leaves pynetdicom's (daemon) association thread
        # waiting for the request until the ACSE timeout: it is not joined
        for assoc in established:
            assoc.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)

    def shutdown(self) -> None:
        """Stop serving and close the listening socket; connections handed in later are refused.
        (pynetdicom's version also unregisters from the AE's own server list, which this server,
        started by us, is not in.)"""
        self._closed = True
        if self.listening:
            socketserver.BaseServer.shutdown(self)
        self.server_close()

    def service_actions(self) -> None:
        """Nothing. pynetdicom's version runs a full ``gc.collect()`` every 60 turns of the accept
        loop (a turn per accepted connection, and one per 0.2 s when idle). In a node with torch and
        nnU-Net loaded a full collection scans ~500,000 objects for ~160 ms while holding the
        interpreter lock: every association stalls meanwhile. The interpreter's own generational
        collector frees the ended associations' reference cycles."""


def _once(call: Ended | None) -> Ended:
    """``call`` (or nothing), run at most once."""
    done = threading.Lock()

    def once() -> None:
        if call is not None and done.acquire(blocking=False):
            call()

    return once


def _handshake(sock: ssl.SSLSocket, peer: Any, timeout: float) -> bool:
    """Complete a server-side TLS handshake within ``timeout`` seconds; False (logged, socket
    closed) if the peer does not complete it or presents no acceptable certificate."""
    sock.settimeout(timeout)
    try:
        sock.do_handshake()
    except (OSError, ssl.SSLError) as exc:
        where = ":".join(str(p) for p in tuple(peer)[:2]) if isinstance(peer, tuple) else str(peer)
        logger.warning("TLS handshake with %s refused: %s", where, exc)
        with contextlib.suppress(OSError):
            sock.close()
        return False
    sock.settimeout(None)
    return True


def guard_options(node: NodeSection) -> dict[str, Any]:
    """The :class:`GuardedAssociationServer` keyword arguments for a node configuration."""
    return {
        "pdu_limits": PduLimits(max_pdu=node.max_pdu_bytes),
        "connection_limits": ConnectionLimits(
            max_associations=node.max_associations,
            max_pending=node.max_pending_connections,
            max_pending_per_peer=node.max_pending_per_peer,
        ),
        "deadlines": ReadDeadlines(
            handshake_seconds=node.acse_timeout_seconds, pdu_seconds=node.network_timeout_seconds
        ),
        "message_limits": MessageLimits(max_dataset_bytes=node.max_dataset_bytes),
        "handshake_timeout": node.acse_timeout_seconds,
    }
