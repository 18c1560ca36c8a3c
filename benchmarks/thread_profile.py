"""cProfile in every thread started while a :class:`ThreadProfiler` is active (pynetdicom's association
and DUL threads, the node's own): for the benchmarks' ``--profile`` options."""

from __future__ import annotations

import cProfile
import io
import pstats
import threading


class ThreadProfiler:
    """cProfile in every thread started while active (pynetdicom's association and DUL threads)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _hook(self, frame: object, event: str, arg: object) -> None:
        prof = cProfile.Profile()
        with self._lock:
            self.profiles.append(prof)
        prof.enable()  # replaces this hook for the rest of the thread

    def __enter__(self) -> ThreadProfiler:
        threading.setprofile(self._hook)  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: object) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]

    def report(self, limit: int = 25) -> str:
        out = io.StringIO()
        stats: pstats.Stats | None = None
        for prof in self.profiles:
            prof.create_stats()
            if not getattr(prof, "stats", None):
                continue
            if stats is None:
                stats = pstats.Stats(prof, stream=out)
            else:
                stats.add(prof)
        if stats is None:
            return "(no profile data)"
        stats.sort_stats("tottime").print_stats(limit)
        stats.sort_stats("cumulative").print_stats(limit)
        return out.getvalue()
