"""The one journal method most services need: writing an event. Services declare the narrow part of
the journal they use as a Protocol; this one is shared by them."""

from __future__ import annotations

from typing import Protocol


class EventLog(Protocol):
    """Writes an event row (``level``: info | warning | error)."""

    def log_event(
        self,
        level: str,
        kind: str,
        message: str,
        *,
        series_uid: str | None = ...,
        job_id: int | None = ...,
        now: float | None = ...,
    ) -> None: ...
