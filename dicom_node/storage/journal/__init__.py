"""The journal: one SQLite database (WAL) that is the source of truth for instances, series, jobs,
deliveries and events.

Design notes
- One connection guarded by a lock, shared by the node's threads. Every public method is one
  transaction. Readers in other processes (``dicom-node status``) open their own connection.
- ``synchronous=NORMAL``: a committed transaction survives a crash of the process (``kill -9``); after a
  power loss the last transactions may be missing, which start-up repairs by re-indexing spool files
  that are not in the journal (the spool's files are fsynced before they are acknowledged).
- Completion timers are not stored as deadlines: they derive from ``series.last_received`` and the
  rule's quiet period, so a restart resumes them by itself.
- Time is passed in (``now``) where a method's result depends on it, so tests can drive the clock.
"""

from __future__ import annotations

import logging
import time

from dicom_node.storage.journal.operator import OperatorOps
from dicom_node.storage.journal.records import (
    DeliveryRow,
    DeliverySpec,
    DueSeries,
    EventRow,
    InstanceRecord,
    InstanceRow,
    JobInput,
    JobOutput,
    JobRow,
    JobSpec,
    JournalCounts,
    RecordOutcome,
    Recovered,
    SeriesRow,
    event_row,
)
from dicom_node.storage.journal.retention import ExpiredSeries, PurgeCounts, PurgePlan, RetentionOps
from dicom_node.storage.journal.schema import SCHEMA_VERSION
from dicom_node.storage.journal.series import SeriesOps
from dicom_node.storage.journal.states import DeliveryState, JobState, SeriesState, Trigger
from dicom_node.storage.journal.work import ManualOps, WorkOps

__all__ = [
    "INTERRUPTED_PREFIX",
    "SCHEMA_VERSION",
    "DeliveryRow",
    "DeliverySpec",
    "DeliveryState",
    "DueSeries",
    "EventRow",
    "ExpiredSeries",
    "InstanceRecord",
    "InstanceRow",
    "JobInput",
    "JobOutput",
    "JobRow",
    "JobSpec",
    "JobState",
    "Journal",
    "JournalCounts",
    "PurgeCounts",
    "PurgePlan",
    "RecordOutcome",
    "Recovered",
    "SeriesRow",
    "SeriesState",
    "Trigger",
]

logger = logging.getLogger(__name__)

#: How :meth:`Journal.recover` notes a job that was running when the node stopped or died.
INTERRUPTED_PREFIX = "interrupted: attempt "


class Journal(SeriesOps, WorkOps, ManualOps, RetentionOps, OperatorOps):
    """The journal: every operation is one transaction; see the module docstring."""

    def log_event(
        self,
        level: str,
        kind: str,
        message: str,
        *,
        series_uid: str | None = None,
        job_id: int | None = None,
        now: float | None = None,
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO events (at, level, kind, series_uid, job_id, message) VALUES (?,?,?,?,?,?)",
                (time.time() if now is None else now, level, kind, series_uid, job_id, message),
            )

    def recent_events(self, limit: int = 20, level: str | None = None) -> list[EventRow]:
        if level is None:
            rows = self._query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query(
                "SELECT * FROM events WHERE level = ? ORDER BY id DESC LIMIT ?", (level, limit)
            )
        return [event_row(r) for r in rows]

    def recover(self) -> Recovered:
        """At start-up: work that was in flight when the process died goes back to the queue; a job
        notes the attempt that was interrupted (its attempts were counted when it was claimed)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE jobs SET state = ?, error = ? || attempts || ' (the node stopped or died during it)'"
                " WHERE state = ?",
                (JobState.PENDING, INTERRUPTED_PREFIX, JobState.RUNNING),
            )
            jobs = cur.rowcount
            cur.execute(
                "UPDATE deliveries SET state = ? WHERE state = ?",
                (DeliveryState.PENDING, DeliveryState.SENDING),
            )
            deliveries = cur.rowcount
        if jobs or deliveries:
            logger.info("recovered %d running job(s) and %d delivery(ies)", jobs, deliveries)
        return Recovered(jobs=jobs, deliveries=deliveries)

    def counts(self) -> JournalCounts:
        """Row counts per state, for status displays and metrics."""

        def per_state(table: str) -> dict[str, int]:
            rows = self._query(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state")
            return {r["state"]: int(r["n"]) for r in rows}

        return JournalCounts(
            series={SeriesState(k): n for k, n in per_state("series").items()},
            jobs={JobState(k): n for k, n in per_state("jobs").items()},
            deliveries={DeliveryState(k): n for k, n in per_state("deliveries").items()},
            instances=int(self._query("SELECT COUNT(*) AS n FROM instances")[0]["n"]),
        )
