"""Opening the journal of the node a ``--config PATH`` names, for commands that read or act on it while
the node may be running (``status``, ``retry``, ``resend``, ``rerun``)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from dicom_node.config import load_config
from dicom_node.errors import ConfigError
from dicom_node.storage.journal import Journal
from dicom_node.storage.journal.opening import JOURNAL_NAME


class CommandExit(Exception):
    """The command cannot go on; its message is printed and the command exits with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def open_node_journal(config_path: Path, *, readonly: bool) -> Journal:
    """The journal of the configured node. Raises :class:`CommandExit`: 2 for a bad configuration, 1 when
    the journal does not exist yet or cannot be opened."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CommandExit(str(exc), 2) from exc
    path = config.node.storage_dir / JOURNAL_NAME
    if not path.exists():
        raise CommandExit(f"no journal at {path}: the node has not run with this storage_dir yet", 1)
    try:
        return Journal(path, readonly=readonly)
    except sqlite3.Error as exc:
        raise CommandExit(f"cannot open the journal {path}: {exc}", 1) from exc


def report_exit(exc: CommandExit) -> int:
    print(str(exc), file=sys.stderr)
    return exc.code
