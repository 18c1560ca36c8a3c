"""``dicom-node send PATH... --to AE@HOST:PORT [--calling-ae X] [-v]``: a storescu for testing and for
big folders.

Folders are searched recursively; DICOMDIRs and files that are not DICOM are skipped and counted. Files
go in their own transfer syntax, as stored. While sending, a progress line (sent / total, rate) on
stderr: rewritten in place on a terminal, every 10 s otherwise. Failures are summed up as one line per
kind (status or error) with an example file; ``-v`` lists every failed file. The last line (stdout)
counts sent, failed and skipped files. Ctrl-C stops and prints what was sent so far (exit 130). Exit 0
only if every file was stored (success or warning status).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

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
    parser.add_argument(
        "--associations",
        type=int,
        default=1,
        metavar="N",
        help="send over N associations at the same time (default %(default)s); helps with a distant "
        "peer (network round trips), not on a busy machine",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per failed file")
    parser.set_defaults(func=run, process_settings=False)


def failure_kind(result: SendResult) -> str:
    """What went wrong, without the file: the status in words, or the error."""
    if result.status is None:
        return result.error or "not sent"
    return f"0x{result.status:04X} {describe(result.status)}"


def failure_line(result: SendResult) -> str:
    comment = f" ({result.error})" if result.status is not None and result.error else ""
    return f"FAILED {result.path}: {failure_kind(result)}{comment}"


class Progress:
    """Counts results as they come and shows a progress line on ``stream``."""

    def __init__(self, total: int, stream: TextIO, *, verbose: bool, interval: float | None = None) -> None:
        self.total = total
        self.stream = stream
        self.verbose = verbose
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.start = time.monotonic()
        self._shown = self.start
        self.sent = 0
        self.skipped = 0
        self.failures: list[SendResult] = []

    def __call__(self, result: SendResult) -> None:
        if result.ok:
            self.sent += 1
        elif result.skipped:
            self.skipped += 1
        else:
            self.failures.append(result)
            if self.verbose:
                self._clear()
                print(failure_line(result), file=self.stream, flush=True)
        now = time.monotonic()
        if now - self._shown >= self.interval:
            self._shown = now
            self.show(now)

    @property
    def done(self) -> int:
        return self.sent + self.skipped + len(self.failures)

    def rate(self, now: float | None = None) -> float:
        elapsed = (now or time.monotonic()) - self.start
        return self.sent / elapsed if elapsed > 0 else 0.0

    def show(self, now: float) -> None:
        failed = len(self.failures)
        line = f"{self.done}/{self.total} files, {self.sent} sent, {failed} failed, {self.rate(now):.1f}/s"
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")

    def summary(self, missing: int) -> list[str]:
        """One line per failure kind, most frequent first, with an example file."""
        self._clear()
        kinds = Counter(failure_kind(r) for r in self.failures)
        example = {failure_kind(r): r.path for r in reversed(self.failures)}
        lines = [f"FAILED {n} file(s): {kind} (e.g. {example[kind]})" for kind, n in kinds.most_common()]
        if missing:
            lines.append(f"FAILED {missing} path(s): no such file or folder")
        return lines


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
    progress = Progress(len(files), sys.stderr, verbose=args.verbose)
    interrupted = False
    try:
        send_files(
            files,
            peer,
            args.calling_ae,
            timeout=args.timeout,
            on_result=progress,
            associations=max(1, args.associations),
        )
    except KeyboardInterrupt:
        interrupted = True
    elapsed = time.monotonic() - progress.start
    for line in progress.summary(len(missing)):
        print(line, file=sys.stderr)
    failed = len(progress.failures) + len(missing)
    skipped = f", {progress.skipped} skipped (DICOMDIR or not DICOM)" if progress.skipped else ""
    rate = progress.sent / elapsed if elapsed > 0 else 0.0
    head = f"interrupted after {progress.done} of {len(files)} files: " if interrupted else ""
    print(f"{head}{progress.sent} sent, {failed} failed{skipped}, {elapsed:.2f} s ({rate:.1f}/s) to {peer}")
    if interrupted:
        return 130
    return 0 if failed == 0 else 1
