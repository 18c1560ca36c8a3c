"""Mutual exclusion between filing instances of a series and purging that series.

Filing takes a series' lock shared (instances of one series arriving on parallel associations do not
wait for each other); a retention purge takes it exclusive. Striped: a fixed number of locks chosen
by a hash of the series UID, so no state grows with the number of series.
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path


class _SharedExclusiveLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            # a waiting purge goes first, so a steady stream of instances cannot starve it
            self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                self._cond.wait_for(lambda: not self._writer and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class SeriesLocks:
    """``lock_dir``: when several processes file into one spool (``node.receive_processes``), each
    stripe is also an ``flock`` on a file there, so a purge in one process excludes filing in all."""

    def __init__(self, stripes: int = 64, *, lock_dir: Path | None = None) -> None:
        if stripes < 1:
            raise ValueError("stripes must be >= 1")
        self._locks = [_SharedExclusiveLock() for _ in range(stripes)]
        self._lock_dir = lock_dir
        if lock_dir is not None:
            lock_dir.mkdir(parents=True, exist_ok=True)

    def _stripe(self, series_uid: str) -> int:
        return zlib.crc32(series_uid.encode("ascii", "replace")) % len(self._locks)

    @contextmanager
    def _held(self, series_uid: str, exclusive: bool) -> Iterator[None]:
        stripe = self._stripe(series_uid)
        lock = self._locks[stripe]
        with lock.exclusive() if exclusive else lock.shared():
            if self._lock_dir is None:
                yield
                return
            fd = os.open(
                self._lock_dir / f"series-{stripe:02d}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                yield
            finally:
                os.close(fd)  # releases the flock

    def filing(self, series_uid: str) -> AbstractContextManager[None]:
        """Held (shared) while an instance of the series is filed and journaled."""
        return self._held(series_uid, exclusive=False)

    def purging(self, series_uid: str) -> AbstractContextManager[None]:
        """Held (exclusive) while the series is purged: no instance of it is filed meanwhile."""
        return self._held(series_uid, exclusive=True)
