"""A receiving node alone in a process, for memory measurements.

``python -m tests.support.rss_node STORAGE`` starts :class:`tests.support.scp.Node` on a free port and
prints ``port N``; then, for each line it reads on stdin, it prints its peak resident set size in kB
since the previous line (``VmHWM``, reset through ``/proc/self/clear_refs``; start-up's own peak,
imports included, would hide what a transfer costs). It stops at the end of its input."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from dicom_node.net.switches import stream_received_datasets
from tests.support.scp import running_node


def peak_rss_kb() -> int:
    """This process's peak RSS since the last reset, in kB; then reset it (Linux >= 4.0)."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, "no VmHWM in /proc/self/status"
    Path("/proc/self/clear_refs").write_text("5")
    return int(match[1])


def main() -> None:
    stream_received_datasets()  # as dicom_node.process.configure_process does at start-up
    with running_node(Path(sys.argv[1])) as node:
        print(f"port {node.port}", flush=True)
        for _ in sys.stdin:
            print(peak_rss_kb(), flush=True)


if __name__ == "__main__":
    main()
