"""``dicom-node echo AE@HOST:PORT [--calling-ae X]``: C-ECHO a DICOM peer (exit 0 on success)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from dicom_node.errors import ConfigError, DeliveryError
from dicom_node.net.ae_titles import ae_title_argument
from dicom_node.net.dimse_status import SUCCESS, describe
from dicom_node.net.peers import Peer
from dicom_node.net.scu import echo

DEFAULT_CALLING_AE = "ECHOSCU"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "echo",
        help="C-ECHO a DICOM peer",
        description="Open an association to AE@HOST:PORT, send a C-ECHO and print the answer.",
    )
    parser.add_argument("peer", metavar="AE@HOST:PORT", help="the peer, e.g. NNUNET@127.0.0.1:11112")
    parser.add_argument(
        "--calling-ae",
        default=DEFAULT_CALLING_AE,
        type=ae_title_argument,
        help="our AE title (default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step (default %(default)s)")
    parser.set_defaults(func=run, process_settings=False)


def run(args: argparse.Namespace) -> int:
    try:
        peer = Peer.parse(args.peer)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        status = echo(peer, args.calling_ae, timeout=args.timeout)
    except DeliveryError as exc:
        print(f"FAILED {exc}", file=sys.stderr)
        return 1
    elapsed_ms = (time.monotonic() - start) * 1000
    print(f"C-ECHO {peer}: 0x{status:04X} {describe(status)} ({elapsed_ms:.0f} ms)")
    return 0 if status == SUCCESS else 1
