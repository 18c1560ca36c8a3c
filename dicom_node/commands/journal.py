"""``dicom-node journal rebuild --config PATH [--force]``: move a damaged journal aside and re-index
the spool into a fresh one (see :mod:`dicom_node.storage.journal.opening`). Refuses while a node
runs on the storage folder, and refuses a journal that is not damaged unless ``--force``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicom_node.config import load_config
from dicom_node.errors import NodeError
from dicom_node.storage.access import apply_permissions, lock_storage
from dicom_node.storage.filing import Spool
from dicom_node.storage.journal import Journal
from dicom_node.storage.journal.opening import JOURNAL_NAME, is_damaged, move_aside


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "journal",
        help="repair the node's journal",
        description="Journal maintenance; run it with the node stopped.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    rebuild = actions.add_parser(
        "rebuild",
        help="move a damaged journal aside and re-index the spool into a new one",
        description="Move journal.sqlite (and its -wal/-shm files) aside as journal.sqlite.damaged-TIME"
        " and record every spool file in a new journal; series are routed and processed again.",
    )
    rebuild.add_argument("--config", type=Path, required=True, metavar="PATH", help="node configuration")
    rebuild.add_argument("--force", action="store_true", help="rebuild even if the journal is not damaged")
    rebuild.set_defaults(func=run_rebuild)


def run_rebuild(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except NodeError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    storage = config.node.storage_dir
    if not storage.is_dir():
        print(f"no storage folder at {storage}", file=sys.stderr)
        return 1
    try:
        apply_permissions(storage, config.node.storage_permissions)
        lock = lock_storage(storage)
    except NodeError as exc:
        print(f"cannot rebuild: {exc}", file=sys.stderr)
        return 1
    try:
        path = storage / JOURNAL_NAME
        damage = is_damaged(path) if path.exists() else None
        if path.exists() and damage is None and not args.force:
            print(f"the journal {path} passes its integrity check; use --force to rebuild it anyway")
            return 1
        moved = move_aside(storage).moved_to
        journal = Journal(path)
        try:
            stats = Spool(
                storage, fsync=config.node.fsync, max_dataset_bytes=config.node.max_dataset_bytes
            ).reconcile(journal)
            count = journal.counts().instances
        finally:
            journal.close()
    finally:
        lock.release()
    aside = ", ".join(p.name for p in moved) or "nothing (there was no journal)"
    print(
        f"journal rebuilt: {count} instance(s) recorded from the spool, {stats['unreadable']} unreadable"
        f" file(s) left in place; moved aside: {aside}"
    )
    return 0
