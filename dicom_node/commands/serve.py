"""``dicom-node serve --config PATH``: run the node in the foreground until SIGTERM/SIGINT.

Logs go to stderr; once the SCP listens, one line ``listening on AE@HOST:PORT`` is printed on stdout
(tests and scripts wait for it). On SIGTERM or SIGINT the node stops accepting associations, lets the
instance being written finish, stops its threads and closes the journal, then the command exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from dicom_node.config import load_config
from dicom_node.errors import NodeError
from dicom_node.logs import configure_logging

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the DICOM node in the foreground",
        description="Receive, file, route, segment and send, until SIGTERM or SIGINT.",
    )
    parser.add_argument(
        "--config", type=Path, required=True, metavar="PATH", help="node configuration (YAML)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicom_node.node import Node  # heavy imports (torch) only for this command

    try:
        config = load_config(args.config)
    except NodeError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    # the config's logging section; a --log-level on the command line wins over its level
    level = getattr(args, "log_level", None) or config.logging.level or "INFO"
    configure_logging(level, config.logging.format)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    node = Node(config)
    try:
        try:
            node.start()
        except NodeError as exc:
            logger.error("cannot start: %s", exc)
            return 2
        print(f"listening on {node.address}", flush=True)
        if node.http is not None and config.http is not None:
            print(f"http on {node.http.scheme}://{config.http.host}:{node.http_port}", flush=True)
        while not stop.wait(1.0):
            pass
        logger.info("signal %s: stopping", signal.Signals(received[0]).name if received else "?")
    finally:
        node.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("stopped")
    return 0
