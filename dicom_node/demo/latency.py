"""Per-stage latency of one series, from the journal: the time from the last instance acknowledged to
the result accepted at the destination, split into the stages the node goes through.

Sources: ``instances.received_at`` (journaled just before the C-STORE is acknowledged), the job's
``created_at`` (completion fired), ``started_at`` / ``finished_at`` and its ``timings`` (what the
executor measured: load, inference, postprocess, seg_write, ...), and the delivery's ``created_at`` /
``done_at``. The destination's own acceptance time can be given when known (the demo's receiver).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from dicom_node.storage.journal import (
    DeliveryRow,
    DeliveryState,
    InstanceRow,
    JobRow,
    JobState,
    SeriesRow,
)

logger = logging.getLogger(__name__)


class LatencyJournal(Protocol):
    """What the latency record reads of :class:`dicom_node.storage.journal.Journal`."""

    def list_jobs(self, limit: int = ..., state: JobState | None = ...) -> list[JobRow]: ...
    def list_deliveries(self, limit: int = ..., state: DeliveryState | None = ...) -> list[DeliveryRow]: ...
    def instances_of_series(self, series_uid: str) -> list[InstanceRow]: ...
    def get_series(self, series_uid: str) -> SeriesRow | None: ...


#: Executor timing keys in the order they happen; other keys are listed after them.
EXECUTOR_STAGES = ("load", "inference", "postprocess", "seg_write")
#: Timing keys that are sums of the others (executor total, the worker's wall time of the job).
TOTAL_KEYS = frozenset({"total", "job"})


@dataclass(frozen=True)
class SeriesLatency:
    """Timestamps (``time.time()`` seconds) and executor timings of the job that delivered a series."""

    series_uid: str
    instances: int
    last_instance_at: float
    job_id: int
    trigger: str
    job_created_at: float
    job_started_at: float
    job_finished_at: float
    executor_timings: dict[str, float]
    delivery_created_at: float | None
    delivery_done_at: float | None
    accepted_at: float | None = None
    quiet_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def end(self) -> float | None:
        """When the result was accepted: at the destination if known, else the delivery's end."""
        return self.accepted_at if self.accepted_at is not None else self.delivery_done_at

    @property
    def total(self) -> float | None:
        end = self.end
        return None if end is None else end - self.last_instance_at

    def stages(self) -> list[tuple[str, float]]:
        """``(stage, seconds)`` in order; they add up to :attr:`total` (``other`` is the job's time
        outside the executor's own stages)."""
        out: list[tuple[str, float]] = [
            (f"completion ({self.trigger})", self.job_created_at - self.last_instance_at),
            ("queue", self.job_started_at - self.job_created_at),
        ]
        job_time = self.job_finished_at - self.job_started_at
        known = 0.0
        keys = [k for k in EXECUTOR_STAGES if k in self.executor_timings]
        keys += sorted(k for k in self.executor_timings if k not in EXECUTOR_STAGES and k not in TOTAL_KEYS)
        for key in keys:
            out.append((key, self.executor_timings[key]))
            known += self.executor_timings[key]
        out.append(("other (job)", max(0.0, job_time - known)))
        end = self.end
        if end is not None:
            out.append(("sending", end - self.job_finished_at))
        return out


def _delivered_job(journal: LatencyJournal, series_uid: str) -> JobRow | None:
    jobs = [
        j
        for j in journal.list_jobs(limit=1000)
        if j.series_uid == series_uid
        and j.state in (JobState.DONE, JobState.EMPTY)
        and j.started_at is not None
        and j.finished_at
    ]
    return max(jobs, key=lambda j: j.id) if jobs else None


def series_latency(
    journal: LatencyJournal, series_uid: str, *, accepted_at: float | None = None
) -> SeriesLatency | None:
    """The latency record of the newest finished job of ``series_uid``; None while there is none."""
    job = _delivered_job(journal, series_uid)
    if job is None or job.started_at is None or job.finished_at is None:
        return None
    instances = journal.instances_of_series(series_uid)
    if not instances:
        return None
    series = journal.get_series(series_uid)
    deliveries = [
        d for d in journal.list_deliveries(limit=1000, state=DeliveryState.DONE) if d.job_id == job.id
    ]
    delivery = min(deliveries, key=lambda d: d.done_at or 0.0) if deliveries else None
    return SeriesLatency(
        series_uid=series_uid,
        instances=len(instances),
        last_instance_at=max(i.received_at for i in instances),
        job_id=job.id,
        trigger=job.trigger,
        job_created_at=job.created_at,
        job_started_at=job.started_at,
        job_finished_at=job.finished_at,
        executor_timings=dict(job.timings),
        delivery_created_at=None if delivery is None else delivery.created_at,
        delivery_done_at=None if delivery is None else delivery.done_at,
        accepted_at=accepted_at,
        quiet_seconds=None if series is None else series.quiet_seconds,
    )
