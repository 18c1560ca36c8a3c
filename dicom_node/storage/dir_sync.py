"""Group commit of folder fsyncs: one ``fsync`` of a folder covers every rename into it that finished
before the fsync began.

Each received instance is renamed into its series folder and the folder is fsynced before the
instance is acknowledged. When several associations file into the same folder at once, their folder
fsyncs are redundant: :class:`DirSyncer` lets the first caller run the fsync and the callers that
arrive while it runs wait for the next one, which one of them runs for all. Durability is unchanged:
:meth:`DirSyncer.sync` returns only after an fsync of the folder that started after the caller's
rename had completed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inference.atomic import fsync_dir


@dataclass
class _Folder:
    cond: threading.Condition = field(default_factory=threading.Condition)
    requested: int = 0  # renames announced so far
    done: int = 0  # renames covered by a finished fsync
    running: bool = False
    waiters: int = 0


class DirSyncer:
    """Coalesces concurrent fsyncs of the same folder; thread-safe. ``fsync`` is the function that
    makes one folder durable (replaceable in tests)."""

    def __init__(self, fsync: Callable[[Path], None] = fsync_dir) -> None:
        self._fsync = fsync
        self._lock = threading.Lock()
        self._folders: dict[Path, _Folder] = {}
        self.fsyncs = 0  # fsyncs run (for measurements)
        self.requests = 0  # sync() calls

    def sync(self, folder: Path) -> None:
        """Return once an fsync of ``folder`` that began after this call has finished. A failing
        fsync raises in the caller that ran it; the callers waiting on it run another."""
        with self._lock:
            state = self._folders.setdefault(folder, _Folder())
            state.waiters += 1
            self.requests += 1
        try:
            with state.cond:
                state.requested += 1
                mine = state.requested
                while state.done < mine:
                    if state.running:
                        state.cond.wait()
                        continue
                    state.running = True
                    target = state.requested
                    state.cond.release()
                    try:
                        self._fsync(folder)
                        with self._lock:
                            self.fsyncs += 1
                    finally:
                        state.cond.acquire()
                        state.running = False
                        state.cond.notify_all()
                    state.done = max(state.done, target)
        finally:
            with self._lock:
                state.waiters -= 1
                if state.waiters == 0 and not state.running:
                    self._folders.pop(folder, None)
