"""Prometheus metrics of one node, in a registry the node owns (never the process-wide default one, so
two nodes in one process, as in tests, do not mix their numbers).

Counting happens where it is cheap and exact:

- instances received: counted by the node's ``on_instance`` callback (every filed instance);
- associations rejected (by reason), series completed (by trigger), per-stage latencies and sends:
  read from the journal when ``/metrics`` is scraped, after watermarks set when the node started
  (event ids, job ids, finish times), so each row is counted once and only rows of this process's
  lifetime count, as Prometheus expects of a counter;
- jobs by state, queue depths, delivery retries and GPU memory: gauges read at scrape time.

Stage names: ``quiet_wait`` (last instance of the series to job creation), ``load``, ``inference``,
``postprocess``, ``seg_write`` (from the job's timings, as the executor reports them), ``job`` (the
worker's wall time for the whole job) and ``send`` (delivery queued to delivered).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dicom_node.storage.journal.states import DeliveryState, JobState, SeriesState

if TYPE_CHECKING:
    from dicom_node.storage.journal import Journal

#: Latency buckets (seconds): from a fast CPU model on a phantom to a large GPU model on a big CT.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
JOB_STAGES = ("load", "inference", "postprocess", "seg_write", "job")

GpuInfo = Callable[[], list[tuple[str, int | None, int | None]]]  # per device: name, free, total bytes


def _rejection_reason(kind: str, message: str) -> str | None:
    if kind == "pdu_refused":
        return "pdu_too_large"
    if kind != "association_rejected":
        return None
    why = message.rsplit(": ", 1)[-1].lower()  # "<calling> -> <called> from <peer>: <reason text>"
    if "calling ae" in why:
        return "calling_ae_not_allowed"
    if "called ae" in why:
        return "called_ae_unknown"
    return "other"


class NodeMetrics:
    """The node's metrics (see the module docstring). :meth:`start` sets the watermarks when the
    journal opens; :meth:`render` refreshes from the journal and returns the text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instances_received = Counter(
            "dicom_node_instances_received", "Instances filed (C-STORE, drop folder, HTTP)", registry=r
        )
        self.associations_rejected = Counter(
            "dicom_node_associations_rejected", "Associations refused, by reason", ["reason"], registry=r
        )
        self.series_completed = Counter(
            "dicom_node_series_completed",
            "Series judged complete (a job queued), by trigger",
            ["trigger"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "dicom_node_stage_seconds",
            "Latency of each stage of a job",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.jobs = Gauge("dicom_node_jobs", "Jobs in the journal, by state", ["state"], registry=r)
        self.queue_depth = Gauge(
            "dicom_node_queue_depth", "Work waiting: pending jobs, pending deliveries", ["queue"], registry=r
        )
        self.series_waiting = Gauge(
            "dicom_node_series_receiving", "Series still receiving (completion not decided)", registry=r
        )
        self.delivery_retries = Gauge(
            "dicom_node_delivery_retries",
            "Delivery attempts beyond the first, over the deliveries in the journal",
            registry=r,
        )
        self.gpu_free = Gauge(
            "dicom_node_gpu_memory_free_bytes", "Free memory of an inference GPU", ["device"], registry=r
        )
        self.gpu_total = Gauge(
            "dicom_node_gpu_memory_total_bytes", "Memory of an inference GPU", ["device"], registry=r
        )
        self._lock = threading.Lock()
        self._event_id = 0
        self._job_id = 0
        self._finished_at = 0.0
        self._finished_ids: set[int] = set()
        self._done_at = 0.0
        self._done_ids: set[int] = set()
        self._completed: set[tuple[str, int]] = set()

    def start(self, journal: Journal, now: float | None = None) -> None:
        """Count only what happens from now on."""
        with self._lock:
            self._event_id, self._job_id = journal.last_ids()
            self._finished_at = self._done_at = time.time() if now is None else now

    def refresh(self, journal: Journal, gpu: GpuInfo | None = None) -> None:
        with self._lock:
            self._tail_events(journal)
            self._tail_jobs(journal)
            self._tail_finished(journal)
            self._tail_sends(journal)
            counts = journal.counts()
            for state in JobState:
                self.jobs.labels(str(state)).set(counts.jobs.get(state, 0))
            self.queue_depth.labels("jobs").set(counts.jobs.get(JobState.PENDING, 0))
            self.queue_depth.labels("deliveries").set(counts.deliveries.get(DeliveryState.PENDING, 0))
            self.series_waiting.set(counts.series.get(SeriesState.RECEIVING, 0))
            self.delivery_retries.set(journal.delivery_retries())
        if gpu is not None:
            self.refresh_gpu(gpu)

    def refresh_gpu(self, gpu: GpuInfo) -> None:
        for device, free, total in gpu():
            if free is not None and total is not None:
                self.gpu_free.labels(device).set(free)
                self.gpu_total.labels(device).set(total)

    def render(self, journal: Journal | None, gpu: GpuInfo | None = None) -> bytes:
        if journal is not None:
            self.refresh(journal, gpu)
        return bytes(generate_latest(self.registry))

    # ------------------------------------------------------------------ journal tails

    def _tail_events(self, journal: Journal) -> None:
        for event in journal.events_after(self._event_id):
            self._event_id = event.id
            reason = _rejection_reason(event.kind, event.message)
            if reason is not None:
                self.associations_rejected.labels(reason).inc()

    def _tail_jobs(self, journal: Journal) -> None:
        for job in journal.jobs_created_after(self._job_id):
            self._job_id = job.id
            key = (job.series_uid, job.generation)
            if key in self._completed:  # one series generation, several rules: one completion
                continue
            self._completed.add(key)
            self.series_completed.labels(str(job.trigger)).inc()
        if len(self._completed) > 10000:
            self._completed.clear()

    def _tail_finished(self, journal: Journal) -> None:
        rows = journal.jobs_finished_since(self._finished_at)
        for job in rows:
            if job.id in self._finished_ids:
                continue
            for stage in JOB_STAGES:
                if stage in job.timings:
                    self.stage_seconds.labels(stage).observe(job.timings[stage])
            if job.quiet_wait is not None:
                self.stage_seconds.labels("quiet_wait").observe(max(0.0, job.quiet_wait))
        if rows:
            last = rows[-1].finished_at
            self._finished_ids = {j.id for j in rows if j.finished_at == last}
            self._finished_at = last

    def _tail_sends(self, journal: Journal) -> None:
        rows = journal.deliveries_done_since(self._done_at)
        for d in rows:
            if d.id in self._done_ids:
                continue
            self.stage_seconds.labels("send").observe(max(0.0, d.done_at - d.created_at))
        if rows:
            last = rows[-1].done_at
            self._done_ids = {d.id for d in rows if d.done_at == last}
            self._done_at = last
