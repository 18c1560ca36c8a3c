"""The running SCP: :class:`ScpServer` builds the pynetdicom AE from the node configuration and runs
a PDU-guarded association server (:mod:`dicom_node.net.guarded_server`) with the handlers of a
:class:`~dicom_node.net.receive.Receiver`, in a background thread; ``stop()`` ends it. A receive
process's server (``listen=False``) binds nothing: it serves the connections the node hands it
(:meth:`ScpServer.serve_connection`)."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, cast

from pynetdicom import AE

from dicom_node.config import NodeSection
from dicom_node.net.contexts import accept_every_storage_class, supported_contexts
from dicom_node.net.guarded_server import ConnectionHandoff, Ended, GuardedAssociationServer, guard_options
from dicom_node.net.receive import Receiver, require_streamed_receive
from dicom_node.net.tls import server_context

logger = logging.getLogger(__name__)


def build_ae(node: NodeSection) -> AE:
    """The pynetdicom AE for our SCP. AE title checks are ours (see :meth:`Receiver.check_association`)
    because pynetdicom checks one called AE title only. Storage SOP classes pynetdicom does not know
    are accepted too (:mod:`dicom_node.net.contexts`)."""
    ae = AE(ae_title=node.ae_title[0])
    # the exact limits are the server's (dicom_node.net.conn_limits): pynetdicom's own count also
    # includes connections that have not sent their request yet, so it must never be the one to refuse
    ae.maximum_associations = node.max_associations + node.max_pending_connections
    ae.acse_timeout = node.acse_timeout_seconds
    ae.dimse_timeout = node.dimse_timeout_seconds
    ae.network_timeout = node.network_timeout_seconds
    ae.maximum_pdu_size = node.max_pdu_bytes
    ae.require_called_aet = False
    ae.require_calling_aet = []
    ae.supported_contexts = supported_contexts()
    accept_every_storage_class()
    return ae


class ScpServer:
    """A running SCP: ``start()`` binds and serves in a background thread, ``stop()`` ends it.
    ``listen=False``: it binds nothing and serves only what :meth:`serve_connection` hands it."""

    def __init__(
        self,
        node: NodeSection,
        receiver: Receiver,
        *,
        host: str | None = None,
        port: int | None = None,
        listen: bool = True,
    ):
        self.node = node
        self.listen = listen
        self.receiver = receiver
        self.host = node.host if host is None else host
        self._port = node.port if port is None else port
        require_streamed_receive()
        self.ae = build_ae(node)
        self._server: GuardedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when the configuration asked for port 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    def start(self) -> ScpServer:
        server = self.ae.make_server(  # returns an instance of server_class
            (self.host, self._port),
            ae_title=self.node.ae_title[0],
            evt_handlers=self.receiver.evt_handlers(),
            ssl_context=None if self.node.tls is None else server_context(self.node.tls),
            server_class=GuardedAssociationServer,
            on_pdu_refused=self.receiver.pdu_refused,
            store_target=self.receiver,
            listen=self.listen,
            **guard_options(self.node),
        )
        self._server = cast(GuardedAssociationServer, server)
        if not self.listen:
            logger.info(
                "DICOM SCP serving the connections the node hands over, as %s", ", ".join(self.node.ae_title)
            )
            return self
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dicom-scp", daemon=True
        )
        self._thread.start()
        logger.info(
            "DICOM SCP listening on %s:%d%s as %s (max PDU %d, max %d associations)",
            self.host,
            self.port,
            "" if self.node.tls is None else " (TLS)",
            ", ".join(self.node.ae_title),
            self.node.max_pdu_bytes,
            self.node.max_associations,
        )
        return self

    def is_serving(self) -> bool:
        """Whether the listening socket is open and its accept loop runs (for readiness probes, which
        must not open connections: each would become an association waiting for its A-ASSOCIATE-RQ)."""
        server, thread = self._server, self._thread
        return server is not None and thread is not None and thread.is_alive() and server.fileno() >= 0

    def hand_off_to(self, handoff: ConnectionHandoff | None) -> None:
        """Let ``handoff`` decide, for each accepted connection, whether another process serves it."""
        if self._server is not None:
            self._server.handoff = handoff

    def serve_connection(
        self, sock: socket.socket, address: tuple[str, int], on_end: Ended | None = None
    ) -> None:
        """Serve a connection accepted elsewhere exactly as one accepted here; ``on_end`` runs once it
        has ended. After :meth:`stop` the connection is closed at once."""
        server = self._server
        if server is None:
            sock.close()
            if on_end is not None:
                on_end()
            return
        server.serve_connection(sock, address, on_end=on_end)

    def active_associations(self) -> list[Any]:
        if self._server is None:
            return []
        return list(self._server.active_associations)

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let running associations finish for up to ``grace_seconds`` (an instance
        being filed is always finished), then abort the rest."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.end_connections(grace_seconds)
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("DICOM SCP stopped")

    def __enter__(self) -> ScpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
