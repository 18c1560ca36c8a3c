"""``dicom-node send PATH... --to AE@HOST:PORT [--calling-ae X]``: a storescu for testing.

Folders are searched recursively. Files go in their own transfer syntax, as stored. One line per
failure, then a summary line; exit 0 only if every file was stored (success or warning status).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from dicom_node.errors import ConfigError
from dicom_node.net.ae_titles import ae_title_argument
from dicom_node.net.dimse_status import describe
from dicom_node.net.peers import Peer
from dicom_node.net.scu import SendResult, iter_files, send_files

DEFAULT_CALLING_AE = "STORESCU"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "send",
        help="C-STORE DICOM files to a peer",
        description="Send DICOM files (folders: recursively) to AE@HOST:PORT in their own transfer syntax.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    parser.add_argument("--to", required=True, metavar="AE@HOST:PORT", help="the receiving peer")
    parser.add_argument(
        "--calling-ae",
        default=DEFAULT_CALLING_AE,
        type=ae_title_argument,
        help="our AE title (default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step (default %(default)s)")
    parser.set_defaults(func=run)


def failure_line(result: SendResult) -> str:
    if result.status is None:
        return f"FAILED {result.path}: {result.error}"
    comment = f" ({result.error})" if result.error else ""
    return f"FAILED {result.path}: 0x{result.status:04X} {describe(result.status)}{comment}"


def run(args: argparse.Namespace) -> int:
    try:
        peer = Peer.parse(args.to)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = [p for p in args.paths if not p.exists()]
    for path in missing:
        print(f"FAILED {path}: no such file or folder", file=sys.stderr)
    files = iter_files(p for p in args.paths if p.exists())
    if not files and not missing:
        print("error: no files found", file=sys.stderr)
        return 1

    def report(result: SendResult) -> None:
        if not result.ok:
            print(failure_line(result), file=sys.stderr, flush=True)

    start = time.monotonic()
    results = send_files(files, peer, args.calling_ae, timeout=args.timeout, on_result=report)
    elapsed = time.monotonic() - start
    sent = sum(1 for r in results if r.ok)
    failed = len(results) - sent + len(missing)
    rate = sent / elapsed if elapsed > 0 else 0.0
    print(f"{sent} sent, {failed} failed, {elapsed:.2f} s ({rate:.1f}/s) to {peer}")
    return 0 if failed == 0 else 1
