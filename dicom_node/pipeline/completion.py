"""Series completion: route new series, and turn complete series into inference jobs.

One thread, woken when an instance is filed or an association is released, else sleeping until the
journal's next completion deadline (or ``max_poll``). Each pass:

1. routes the series that are receiving and have no rule decision yet: reads the header of one of
   its filed instances (no pixel data), builds the routing facts with the called/calling AE recorded
   for the series, and stores the decision (matched rules and the completion settings they imply).
   A series that matches no rule becomes ``unmatched``: logged once (and an event), kept, never sent;
   one whose header cannot be read becomes ``error``, with the reason;
2. creates the jobs of every routed series whose completion condition holds (``journal.due_series``:
   expected instance count reached, delivering association released, or quiet period over), one per
   matched rule, with the trigger recorded, and wakes the workers.

Late arrivals need no code here: a new instance bumps the series' generation and puts it back to
``receiving``, so the next completion queues a job for the new generation and the journal supersedes
the stale one. One series never stops the others: an exception while routing or completing it marks it
``error`` with the reason (journal, event, ``dicom-node status``) and the pass goes on; a new instance of
the series routes it again. Timers are not kept in memory: they derive from the journal, so a restart
resumes them.
Rules come from a getter (hot reload); after a reload :meth:`rules_reloaded` re-routes the series
that are still receiving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset

from dicom_node.errors import UnreadableDatasetError
from dicom_node.pipeline.loop import Clock, LoopService, LoopThread
from dicom_node.pipeline.routing import RuleSet, SeriesFacts, job_specs, routing_settings
from dicom_node.storage.header import read_routing_header
from dicom_node.storage.ingest import is_request_origin
from dicom_node.storage.journal import DueSeries, InstanceRow, JobSpec, SeriesRow, Trigger
from dicom_node.storage.journal.event_log import EventLog

logger = logging.getLogger(__name__)


class CompletionJournal(EventLog, Protocol):
    """What the completion loop needs of :class:`dicom_node.storage.journal.Journal`."""

    def unrouted_series(self) -> list[SeriesRow]: ...
    def due_series(self, now: float) -> list[DueSeries]: ...
    def next_due_time(self) -> float | None: ...
    def get_series(self, series_uid: str) -> SeriesRow | None: ...
    def instances_of_series(self, series_uid: str) -> list[InstanceRow]: ...
    def clear_routing_of_receiving(self) -> int: ...
    def fail_series(self, series_uid: str, *, reason: str) -> bool: ...

    def set_routing(
        self,
        series_uid: str,
        *,
        rules: Sequence[str],
        quiet_seconds: float = ...,
        complete_on_release: bool = ...,
        use_expected_count: bool = ...,
        note: str = ...,
    ) -> None: ...

    def create_jobs(
        self, series_uid: str, *, generation: int, jobs: Sequence[JobSpec], trigger: Trigger, now: float
    ) -> list[int]: ...


class CompletionLoop(LoopService):
    """Routes new series and queues jobs for complete ones (:meth:`run_once`), in its own thread."""

    def __init__(
        self,
        journal: CompletionJournal,
        *,
        storage_dir: Path,
        rules: Callable[[], RuleSet],
        on_jobs: Callable[[], None] | None = None,
        clock: Clock = time.time,
        max_poll: float = 5.0,
    ) -> None:
        self._journal = journal
        self._storage_dir = Path(storage_dir)
        self._rules = rules
        self._on_jobs = on_jobs or (lambda: None)
        self._clock = clock
        self._loop = LoopThread("completion", self.run_once, clock=clock, max_poll=max_poll)

    def rules_reloaded(self) -> None:
        """The rules changed: series still receiving are routed again by the new rules."""
        n = self._journal.clear_routing_of_receiving()
        if n:
            logger.info("rules reloaded: %d receiving series will be routed again", n)
        self.wake()

    # ------------------------------------------------------------------ one pass

    def run_once(self) -> float | None:
        """Route what is unrouted, queue jobs for what is due; returns the next completion deadline."""
        rules = self._rules()
        for series in self._journal.unrouted_series():
            if is_request_origin(series.last_association_id):  # an HTTP request queues its own job
                continue
            try:
                self._route(series, rules)
            except Exception as exc:  # one series' failure must not stop the others
                self._series_failed(series.series_uid, "routing", exc)
        created = 0
        for due in self._journal.due_series(self._clock()):
            if is_request_origin(due.series.last_association_id):
                continue
            try:
                created += self._complete(due, rules)
            except Exception as exc:
                self._series_failed(due.series.series_uid, "completion", exc)
        if created:
            self._on_jobs()
        return self._journal.next_due_time()

    def _route(self, series: SeriesRow, rules: RuleSet) -> bool:
        """Store the routing decision of one series; True if some rule matched."""
        uid = series.series_uid
        header, problem = self._read_header(uid)
        if header is None:
            note = f"not routed: {problem}"
            self._journal.fail_series(uid, reason=note)
            self._journal.log_event("error", "series_unroutable", note, series_uid=uid, now=self._clock())
            logger.error("series %s %s", uid, note)
            return False
        facts = SeriesFacts.from_dataset(header, called_ae=series.called_ae, calling_ae=series.calling_ae)
        decision = rules.route(facts)
        settings = routing_settings(decision)
        self._journal.set_routing(
            uid,
            rules=settings.rules,
            quiet_seconds=settings.quiet_seconds,
            complete_on_release=settings.complete_on_release,
            use_expected_count=settings.use_expected_count,
            note=settings.note,
        )
        if decision.matched:
            logger.info(
                "series %s (%s, from %s to %s): %s; quiet %.1f s",
                uid,
                facts.modality or "?",
                facts.calling_ae,
                facts.called_ae,
                settings.note,
                settings.quiet_seconds,
            )
            return True
        logger.info(
            "series %s from %s to %s kept, not processed: %s",
            uid,
            facts.calling_ae,
            facts.called_ae,
            settings.note,
        )
        self._journal.log_event("info", "series_unmatched", settings.note, series_uid=uid, now=self._clock())
        return False

    def _complete(self, due: DueSeries, rules: RuleSet) -> int:
        series = due.series
        uid = series.series_uid
        by_name = {r.name: r for r in rules}
        names = list(series.rules or ())
        missing = [n for n in names if n not in by_name]
        if missing:
            # the rules changed under this series; route it again by the current ones
            logger.info("series %s: rule(s) %s no longer exist; routing again", uid, ", ".join(missing))
            if not self._route(series, rules):
                return 0
            fresh = self._journal.get_series(uid)
            if fresh is None:
                return 0
            names = list(fresh.rules or ())
        specs = job_specs([by_name[n] for n in names if n in by_name])
        if not specs:
            return 0
        ids = self._journal.create_jobs(
            uid,
            generation=series.generation,
            jobs=specs,
            trigger=due.trigger,
            now=self._clock(),
        )
        if ids:
            logger.info(
                "series %s complete (%s, %d instances, generation %d): job(s) %s",
                uid,
                due.trigger,
                series.instance_count,
                series.generation,
                ", ".join(map(str, ids)),
                extra={
                    "hop": "series_complete",
                    "job_id": ids[0],
                    "series_uid": uid,
                    "calling_ae": series.calling_ae,
                    "called_ae": series.called_ae,
                    "ms": round((self._clock() - series.first_received) * 1000),
                },
            )
        return len(ids)

    def _series_failed(self, series_uid: str, stage: str, exc: Exception) -> None:
        """Mark a series whose routing or completion raised as failed, with the reason (journal,
        event, log), so that the next pass does not meet it again; a new instance retries it."""
        reason = f"{stage} failed: {type(exc).__name__}: {exc}"
        logger.error("series %s: %s", series_uid, reason, exc_info=exc)
        try:
            self._journal.fail_series(series_uid, reason=reason)
            self._journal.log_event(
                "error", "series_failed", reason, series_uid=series_uid, now=self._clock()
            )
        except Exception:
            logger.exception("series %s: cannot record the failure in the journal", series_uid)

    def _read_header(self, series_uid: str) -> tuple[Dataset | None, str]:
        """The header of the first readable instance of a series, or None and why not."""
        problem = "the series has no instances"
        for row in self._journal.instances_of_series(series_uid):
            path = self._storage_dir / row.path
            try:
                return read_routing_header(path), ""
            except (OSError, UnreadableDatasetError) as exc:
                problem = f"cannot read the header: {exc} (instance {row.sop_instance_uid})"
            logger.warning("series %s: %s", series_uid, problem)
        return None, problem
