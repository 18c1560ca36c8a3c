"""The journal's connection: one SQLite connection (WAL) guarded by a lock, transactions, queries."""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from dicom_node.storage.journal.schema import migrate

T = TypeVar("T")


class JournalBase:
    """Thread-safe access to the journal database at ``path``; the mixins add the operations."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        if readonly:
            # percent-encoded: '?', '#' and '%' in a folder name would otherwise end or alter the path
            uri = f"file:{urllib.parse.quote(str(self.path))}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout = 30000")  # opening and migrating may wait long
        if not readonly:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            migrate(self._conn)
            # from here on, waiting for another process's write (node.receive_processes) is ours to do
            # (see _begin): SQLite's own busy handler sleeps 1 ms, then 2, 5, 10... per retry
            self._conn.execute("PRAGMA busy_timeout = 0")

    def check_integrity(self) -> None:
        """Raise :class:`sqlite3.DatabaseError` if SQLite's quick check finds the file damaged."""
        with self._lock:
            rows = self._conn.execute("PRAGMA quick_check").fetchall()
        problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
        if problems:
            raise sqlite3.DatabaseError("; ".join(problems[:3]))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One IMMEDIATE transaction under the lock."""
        with self._lock:
            cur = self._conn.cursor()
            _retrying_busy(lambda: cur.execute("BEGIN IMMEDIATE"))
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = _retrying_busy(lambda: self._conn.execute(sql, params).fetchall())
        return [{k: r[k] for k in r.keys()} for r in rows]  # noqa: SIM118


_BUSY_WAIT_SECONDS = 30.0
_BUSY_FIRST_SLEEP = 0.0001
_BUSY_MAX_SLEEP = 0.002


def _retrying_busy(attempt: Callable[[], T]) -> T:
    """``attempt()``, again while another connection holds the database (SQLITE_BUSY), sleeping
    0.1 ms at first and at most 2 ms between tries, for up to 30 s; then the error is raised."""
    deadline = time.monotonic() + _BUSY_WAIT_SECONDS
    pause = _BUSY_FIRST_SLEEP
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _BUSY_CODES or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _BUSY_MAX_SLEEP)


_BUSY_CODES = {
    sqlite3.SQLITE_BUSY,
    getattr(sqlite3, "SQLITE_BUSY_SNAPSHOT", -1),
    getattr(sqlite3, "SQLITE_LOCKED", -2),
}
