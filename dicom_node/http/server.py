"""Running the HTTP app with uvicorn on a thread of the node's process.

The listening socket is bound here, before the thread starts, so a port in use fails ``Node.start``
at once with a clear error, and port 0 gives a real port to report. uvicorn does not configure
logging (the entry point owns it) and writes no access log; :mod:`dicom_node.http.app` logs requests.
``stop()`` asks uvicorn to finish the requests in progress and waits for the thread.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from dicom_node.config import HttpSection
from dicom_node.http.app import create_app
from dicom_node.http.context import HttpContext

if TYPE_CHECKING:
    from dicom_node.node import Node

logger = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class HttpServer:
    def __init__(self, node: Node, settings: HttpSection, *, startup_timeout: float = 30.0) -> None:
        self.settings = settings
        self.context = HttpContext(node=node, settings=settings, metrics=node.metrics)
        self.app = create_app(self.context)
        self._startup_timeout = startup_timeout
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._sock is None:
            return self.settings.port
        return int(self._sock.getsockname()[1])

    @property
    def scheme(self) -> str:
        return "https" if self.settings.tls_cert is not None else "http"

    def start(self) -> HttpServer:
        s = self.settings
        # uploads unpacked by requests that a crash interrupted (a running node cleans up after itself)
        shutil.rmtree(self.context.storage_dir / "http-tmp", ignore_errors=True)
        self._sock = _bind(s.host, s.port)
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
            ssl_keyfile=str(s.tls_key) if s.tls_key else None,
            server_header=False,
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._sock]}, name="http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OSError(f"the HTTP server did not start on {s.host}:{s.port}")
            time.sleep(0.02)
        logger.info(
            "HTTP API on %s://%s:%d (token %s)",
            self.scheme,
            s.host,
            self.port,
            "required" if s.token else "off",
        )
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._server = None
