"""Refuse PDUs longer than we allow before reading their body.

pynetdicom 3.0.4 reads a PDU by trusting its 32-bit length field: one header announcing 64 MiB makes it
buffer 64 MiB, whatever maximum PDU length we announced. :class:`PduGuardSocket` is the accepted TCP
socket itself (a ``socket.socket`` subclass built on the same file descriptor), so pynetdicom uses it
unchanged; it follows the PDU framing of the incoming byte stream (6-byte header: type, reserved,
length; then ``length`` bytes) and checks each header's length against a per-type limit. A PDU over
its limit is never read: the guard sends an A-ABORT (service-provider, invalid PDU parameter value),
shuts the connection down and reports end-of-stream, which pynetdicom handles as a closed transport
connection (its association thread ends with EVT_ABORTED).

:class:`GuardedAssociationServer` installs the guard for every accepted connection through the request
handler class pynetdicom's server accepts (``AE.make_server(..., server_class=...)``); nothing in
pynetdicom is patched.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

logger = logging.getLogger(__name__)

PDU_HEADER_LENGTH = 6
# A-ABORT: type 7, reserved, length 4, reserved x2, source 2 (service provider), reason 6 (invalid
# PDU parameter value), PS3.8 9.3.8
A_ABORT_INVALID_PARAMETER = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06"

_P_DATA_TF = 0x04
_ASSOCIATION_PDUS = (0x01, 0x02, 0x03)
_SHORT_PDUS = (0x05, 0x06, 0x07)  # release RQ/RP and abort: 4 bytes of body


@dataclass(frozen=True)
class PduLimits:
    """Largest PDU body (the header's length field) accepted per PDU type.

    ``max_pdu`` is the Maximum Length we announce for P-DATA-TF; ``allowance`` covers peers that
    count the PDU header (or PDV headers) against it. Association PDUs (many presentation contexts)
    may be larger than ``max_pdu`` and have their own bound. Unknown PDU types are passed through for
    pynetdicom to reject."""

    max_pdu: int
    allowance: int = 64
    association_pdu: int = 1024 * 1024
    short_pdu: int = 64

    def limit_for(self, pdu_type: int) -> int | None:
        if pdu_type == _P_DATA_TF:
            return self.max_pdu + self.allowance
        if pdu_type in _ASSOCIATION_PDUS:
            return self.association_pdu
        if pdu_type in _SHORT_PDUS:
            return self.short_pdu
        return None


_socket_recv = socket.socket.recv

RefusedCallback = Callable[[tuple[Any, ...], int, int], None]


class PduGuardSocket(socket.socket):
    """A connected TCP socket whose :meth:`recv` refuses oversized PDUs (see module docstring).

    Only plain ``recv`` calls are accounted (that is all pynetdicom uses); a ``MSG_PEEK`` passes
    through."""

    _limits: PduLimits
    _on_refused: RefusedCallback | None
    _body_left: int
    _pending: bytes
    _refused: bool

    @classmethod
    def wrap(
        cls, sock: socket.socket, limits: PduLimits, on_refused: RefusedCallback | None = None
    ) -> PduGuardSocket:
        """Take over ``sock``'s file descriptor (``sock`` is detached and must not be used)."""
        timeout = sock.gettimeout()
        guarded = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        guarded.settimeout(timeout)
        if guarded.family in (socket.AF_INET, socket.AF_INET6):
            # each PDU goes out at once: no Nagle delay (40 ms per message against delayed ACKs)
            guarded.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        guarded._limits = limits
        guarded._on_refused = on_refused
        guarded._body_left = 0
        guarded._pending = b""
        guarded._refused = False
        return guarded

    @property
    def refused(self) -> bool:
        """True once an oversized PDU was refused on this connection."""
        return self._refused

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        left = self._body_left
        if left and not flags and not self._pending:  # inside a PDU body: the hot path
            data = _socket_recv(self, bufsize if bufsize < left else left)
            self._body_left = left - len(data)
            return data
        if flags & socket.MSG_PEEK:
            return _socket_recv(self, bufsize, flags)
        if self._refused or bufsize <= 0:
            return b""
        if self._pending:
            out, self._pending = self._pending[:bufsize], self._pending[bufsize:]
            return out
        if left:
            data = _socket_recv(self, min(bufsize, left), flags)
            self._body_left = left - len(data)
            return data
        return self._next_header(bufsize, flags)

    def _next_header(self, bufsize: int, flags: int) -> bytes:
        header = b""
        while len(header) < PDU_HEADER_LENGTH:
            chunk = _socket_recv(self, PDU_HEADER_LENGTH - len(header), flags)
            if not chunk:
                return header  # closed mid-header: pynetdicom sees a short read
            header += chunk
        pdu_type, _, length = struct.unpack(">BBL", header)
        limit = self._limits.limit_for(pdu_type)
        if limit is not None and length > limit:
            self._refuse(pdu_type, length, limit)
            return b""
        self._body_left = length
        out, self._pending = header[:bufsize], header[bufsize:]
        return out

    def _refuse(self, pdu_type: int, length: int, limit: int) -> None:
        self._refused = True
        try:
            peer: tuple[Any, ...] = tuple(self.getpeername())
        except OSError:
            peer = ()
        logger.warning(
            "aborting association from %s: PDU type 0x%02X announces %d bytes, more than the %d allowed",
            ":".join(str(p) for p in peer[:2]) or "?",
            pdu_type,
            length,
            limit,
        )
        if self._on_refused is not None:
            try:
                self._on_refused(peer, pdu_type, length)
            except Exception:
                logger.exception("PDU refusal callback failed")
        with contextlib.suppress(OSError):
            self.sendall(A_ABORT_INVALID_PARAMETER)
        with contextlib.suppress(OSError):
            self.shutdown(socket.SHUT_RDWR)


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler, with the accepted socket wrapped in a :class:`PduGuardSocket`."""

    server: GuardedAssociationServer

    _handshake_failed = False

    def setup(self) -> None:
        super().setup()
        sock = self.request
        if isinstance(sock, ssl.SSLSocket):
            # the TLS handshake runs here, in the connection's own thread, within a deadline (see
            # GuardedAssociationServer.get_request); the guard reads the raw stream, which under TLS
            # is ciphertext: PDU sizes are not guarded on TLS connections
            self._handshake_failed = not _handshake(sock, self.client_address, self.server.handshake_timeout)
            return
        if isinstance(sock, socket.socket) and not isinstance(sock, PduGuardSocket):
            # pynetdicom's association closes the socket it was given when it ends
            self.request = PduGuardSocket.wrap(sock, self.server.pdu_limits, self.server.on_pdu_refused)

    def handle(self) -> None:
        if self._handshake_failed:
            return
        super().handle()


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


class GuardedAssociationServer(ThreadedAssociationServer):
    """A threaded association server whose connections are PDU-guarded.

    Made by ``AE.make_server(address, ..., server_class=GuardedAssociationServer,
    pdu_limits=PduLimits(...))``; run with ``serve_forever`` and stopped with :meth:`shutdown`."""

    def __init__(
        self,
        *args: Any,
        pdu_limits: PduLimits,
        on_pdu_refused: RefusedCallback | None = None,
        handshake_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        self.pdu_limits = pdu_limits
        self.on_pdu_refused = on_pdu_refused
        self.handshake_timeout = handshake_timeout
        kwargs["request_handler"] = GuardedRequestHandler
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection. Under TLS the handshake is left to the connection's own thread
        (pynetdicom's version runs it here, in the accept loop, where one silent client would stall
        every other connection)."""
        listener = cast(socket.socket, self.socket)
        sock, address = listener.accept()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def shutdown(self) -> None:
        """Stop serving and close the listening socket. (pynetdicom's version also unregisters
        from the AE's own server list, which this server, started by us, is not in.)"""
        socketserver.BaseServer.shutdown(self)
        self.server_close()
