"""Per-calling-AE disk quotas: one sender cannot fill the disk for everyone.

``node.calling_ae_quota_mb`` gives a calling AE title a limit on the spool bytes of the instances it
sent that the node still keeps. An instance that would take the AE over its limit is refused before
anything is written (0xA700, out of resources, with the reason); other senders go on. What an AE uses
comes from the journal (one indexed sum), cached for ``refresh_seconds`` and counted up as instances
are filed in between, so the check costs no query per instance; retention purges show at the next
refresh. A re-sent instance counts again until that refresh (the check errs on refusing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from dicom_node.errors import OutOfResourcesError

MB = 1024 * 1024


class QuotaJournal(Protocol):
    def bytes_from(self, calling_ae: str) -> int: ...


class CallingAeQuotas:
    """Checks and counts the spool bytes of the calling AEs that have a quota."""

    def __init__(
        self,
        journal: QuotaJournal,
        quotas_mb: Mapping[str, float],
        *,
        refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._limits = {ae.strip(): int(mb * MB) for ae, mb in quotas_mb.items()}
        self._refresh = refresh_seconds
        self._clock = clock
        self._used: dict[str, tuple[int, float]] = {}  # AE -> (bytes, when read from the journal)
        self._lock = threading.Lock()

    def check(self, calling_ae: str, size: int) -> None:
        """Raise :class:`OutOfResourcesError` if ``size`` more bytes take the AE over its quota."""
        ae = calling_ae.strip()
        limit = self._limits.get(ae)
        if limit is None:
            return
        used = self._current(ae)
        if used + size > limit:
            raise OutOfResourcesError(
                f"calling AE {ae} is over its disk quota: {used / MB:.1f} MB kept of {limit / MB:.1f} MB"
                f" (this instance: {size} bytes)"
            )

    def add(self, calling_ae: str, size: int) -> None:
        ae = calling_ae.strip()
        with self._lock:
            if ae in self._used:
                used, at = self._used[ae]
                self._used[ae] = (used + size, at)

    def _current(self, ae: str) -> int:
        with self._lock:
            cached = self._used.get(ae)
            if cached is not None and self._clock() - cached[1] < self._refresh:
                return cached[0]
        used = self._journal.bytes_from(ae)
        with self._lock:
            self._used[ae] = (used, self._clock())
        return used
