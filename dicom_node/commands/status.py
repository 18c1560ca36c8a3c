"""``dicom-node status --config PATH [--json]``: series, jobs, deliveries and last errors.

Opens the node's journal read-only, so it can run beside a running node.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

from dicom_node.ops.node_journal import CommandExit, open_node_journal, report_exit
from dicom_node.status_report import snapshot, to_json, to_text

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show series, jobs, deliveries and recent errors from the node's journal",
        description="Read the journal of the node configured in PATH (read-only; works while it runs).",
    )
    parser.add_argument("--config", type=Path, required=True, metavar="PATH", help="node configuration")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--limit", type=int, default=20, help="rows per section (default 20)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        journal = open_node_journal(args.config, readonly=True)
    except CommandExit as exc:
        return report_exit(exc)
    try:
        snap = snapshot(journal, limit=max(1, args.limit))
    except sqlite3.Error as exc:
        print(f"cannot read the journal: {exc}", file=sys.stderr)
        return 1
    finally:
        journal.close()
    sys.stdout.write(to_json(snap) + "\n" if args.json else to_text(snap))
    return 0
