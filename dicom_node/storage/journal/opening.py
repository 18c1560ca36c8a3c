"""Opening the node's journal at start-up, and rebuilding a damaged one from the spool.

A journal SQLite cannot read (a damaged page, a file that is not a database) must not stop the node
with a traceback, nor be written to further: the node refuses to start with one line that says what to
do. ``dicom-node journal rebuild`` then moves the damaged file aside (with its WAL and shared-memory
files, for a later look) and re-indexes the spool into a fresh journal, as start-up does when the
journal is missing: every filed instance is recorded again and its series routed and completed anew
(SEG UIDs are deterministic, so a result sent again replaces the earlier one at the destination).
Jobs, deliveries and events of the damaged journal are not carried over.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import NodeError
from dicom_node.storage.journal import Journal

logger = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite"
_COMPANIONS = ("", "-wal", "-shm")


class JournalDamagedError(NodeError):
    """The journal cannot be read; ``dicom-node journal rebuild`` is the way out."""


def open_journal(storage_dir: Path) -> Journal:
    """The journal of ``storage_dir``, checked (SQLite quick check); raises
    :class:`JournalDamagedError` with the way out if it is damaged."""
    path = storage_dir / JOURNAL_NAME
    journal: Journal | None = None
    try:
        journal = Journal(path)
        journal.check_integrity()
    except sqlite3.DatabaseError as exc:
        if journal is not None:
            journal.close()
        raise JournalDamagedError(
            f"the journal {path} is damaged ({exc}); with the node stopped, run "
            "'dicom-node journal rebuild --config CONFIG' to move it aside and re-index the spool"
        ) from exc
    return journal


def is_damaged(path: Path) -> str | None:
    """Why the journal at ``path`` cannot be used, or None if it opens and passes the quick check."""
    try:
        journal = Journal(path)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    try:
        journal.check_integrity()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        journal.close()
    return None


@dataclass(frozen=True)
class Rebuilt:
    moved_to: list[Path]  # the damaged journal's files, aside


def move_aside(storage_dir: Path) -> Rebuilt:
    """Rename the journal's files to ``journal.sqlite.damaged-<time>[-wal|-shm]``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for suffix in _COMPANIONS:
        src = storage_dir / f"{JOURNAL_NAME}{suffix}"
        if src.exists():
            dst = storage_dir / f"{JOURNAL_NAME}.damaged-{stamp}{suffix}"
            os.replace(src, dst)
            moved.append(dst)
    return Rebuilt(moved)
