"""Series completion: route new series, and turn complete series into inference jobs.

One thread, woken when an instance is filed or an association is released, else sleeping until the
journal's next completion deadline (or ``max_poll``). Each pass:

1. routes the series that are receiving and have no rule decision yet: reads the header of one of
   its filed instances (no pixel data), builds the routing facts with the called/calling AE recorded
   for the series, and stores the decision (matched rules and the completion settings they imply).
   A series that matches no rule becomes ``unmatched``: logged once (and an event), kept, never sent;
   one whose header cannot be read becomes ``error``, with the reason;
2. forwards, for rules saying ``forward: true`` with ``forward_when: received``, the instances filed
   since the last pass;
3. completes every routed series whose completion condition holds (``journal.due_series``: every
   acquisition seen holds its announced count, delivering association released, quiet period over,
   or for ``complete: study`` the whole study quiet): per matched rule a forwarding job and/or a
   model job, with the trigger recorded;
4. for each rule with ``channels`` (which completes on the study) matched by a series completed in
   this pass: one job for the study, on the channel series :func:`choose_channels` picks now (none
   while a candidate series is still receiving: its completion makes it); a channel no series fits
   gives a ``failed`` job with the reason. Then wakes the workers and the sender.

Late arrivals need no code here: a new instance bumps the series' generation and puts it back to
``receiving`` (only the quiet period completes it again), so the next completion queues a job for the
new generation and the journal supersedes the stale one; an unchanged re-send keeps the generation and
the journal delivers the finished result again instead of running it. The same holds for a study
job: a late instance in any of its channel series makes one new study job once the study is quiet
again. One series never stops the others: an exception while routing or completing it marks it
``error`` with the reason (journal, event, ``dicom-node status``) and the pass goes on; a new
instance of the series routes it again. Timers are not kept in memory: they derive from the journal,
so a restart resumes them.
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

from dicom_node.config import RuleConfig
from dicom_node.errors import UnreadableDatasetError
from dicom_node.net.contexts import is_image_storage
from dicom_node.pipeline.loop import Clock, LoopService, LoopThread
from dicom_node.pipeline.routing import (
    RuleSet,
    SeriesFacts,
    forward_spec,
    job_specs,
    model_spec,
    routing_settings,
)
from dicom_node.pipeline.study_inputs import MissingChannel, choose_channels
from dicom_node.storage.header import read_routing_header
from dicom_node.storage.ingest import is_request_origin
from dicom_node.storage.journal import DueSeries, InstanceRow, JobInput, JobSpec, SeriesRow, Trigger
from dicom_node.storage.journal.event_log import EventLog

logger = logging.getLogger(__name__)


class CompletionJournal(EventLog, Protocol):
    """What the completion loop needs of :class:`dicom_node.storage.journal.Journal`."""

    def unrouted_series(self) -> list[SeriesRow]: ...
    def receiving_routed_series(self) -> list[SeriesRow]: ...
    def forward_received(self, series_uid: str, spec: JobSpec, *, now: float) -> int | None: ...
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
        complete_study: bool = ...,
        note: str = ...,
    ) -> None: ...

    def create_jobs(
        self, series_uid: str, *, generation: int, jobs: Sequence[JobSpec], trigger: Trigger, now: float
    ) -> list[int]: ...

    def series_of_study(self, study_uid: str) -> list[SeriesRow]: ...

    def create_study_job(
        self,
        study_uid: str,
        spec: JobSpec,
        *,
        inputs: Sequence[JobInput],
        trigger: Trigger,
        now: float,
        error: str | None = ...,
    ) -> int | None: ...


class CompletionLoop(LoopService):
    """Routes new series and queues jobs for complete ones (:meth:`run_once`), in its own thread."""

    def __init__(
        self,
        journal: CompletionJournal,
        *,
        storage_dir: Path,
        rules: Callable[[], RuleSet],
        on_jobs: Callable[[], None] | None = None,
        on_deliveries: Callable[[], None] | None = None,
        clock: Clock = time.time,
        max_poll: float = 5.0,
    ) -> None:
        self._journal = journal
        self._storage_dir = Path(storage_dir)
        self._rules = rules
        self._on_jobs = on_jobs or (lambda: None)
        self._on_deliveries = on_deliveries or (lambda: None)
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
        forwarded = self._forward_received(rules)
        created = 0
        studies: dict[tuple[str, str], DueSeries] = {}  # (study, channels rule): a series that completed
        for due in self._journal.due_series(self._clock()):
            if is_request_origin(due.series.last_association_id):
                continue
            try:
                count, study_rules = self._complete(due, rules)
                created += count
            except Exception as exc:
                self._series_failed(due.series.series_uid, "completion", exc)
                continue
            for rule in study_rules:
                studies.setdefault((due.series.study_uid, rule.name), due)
        for (study_uid, name), due in studies.items():
            try:
                created += self._complete_study(study_uid, rules, name, due)
            except Exception as exc:
                self._series_failed(due.series.series_uid, f"study completion (rule {name})", exc)
        if created:
            self._on_jobs()
        if created or forwarded:
            self._on_deliveries()
        return self._journal.next_due_time()

    def _forward_received(self, rules: RuleSet) -> int:
        """Forward what arrived in series whose rules say ``forward_when: received``."""
        eager = {r.name: r for r in rules if r.forward and r.forward_when == "received"}
        if not eager:
            return 0
        count = 0
        for series in self._journal.receiving_routed_series():
            for name in series.rules or ():
                rule = eager.get(name)
                if rule is None:
                    continue
                job_id = self._journal.forward_received(
                    series.series_uid, forward_spec(rule), now=self._clock()
                )
                if job_id is not None:
                    count += 1
                    logger.info("series %s: forwarding job %d (rule %s)", series.series_uid, job_id, name)
        return count

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
        facts = SeriesFacts.from_dataset(
            header,
            called_ae=series.called_ae,
            calling_ae=series.calling_ae,
            sop_classes=[r.sop_class_uid for r in self._journal.instances_of_series(uid)],
        )
        decision = rules.route(facts)
        settings = routing_settings(decision)
        self._journal.set_routing(
            uid,
            rules=settings.rules,
            quiet_seconds=settings.quiet_seconds,
            complete_on_release=settings.complete_on_release,
            use_expected_count=settings.use_expected_count,
            complete_study=settings.complete_study,
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

    def _complete(self, due: DueSeries, rules: RuleSet) -> tuple[int, list[RuleConfig]]:
        """Complete one series: its own jobs; returns how many, and its rules with ``channels`` (their
        job is the study's, made after every due series of the pass completed)."""
        series = due.series
        uid = series.series_uid
        by_name = {r.name: r for r in rules}
        names = list(series.rules or ())
        missing = [n for n in names if n not in by_name]
        if missing:
            # the rules changed under this series; route it again by the current ones
            logger.info("series %s: rule(s) %s no longer exist; routing again", uid, ", ".join(missing))
            if not self._route(series, rules):
                return 0, []
            fresh = self._journal.get_series(uid)
            if fresh is None:
                return 0, []
            names = list(fresh.rules or ())
        matched = [by_name[n] for n in names if n in by_name]
        # no specs (only forwarding as received, or a study's channel): completes with no job
        specs = job_specs(matched)
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
        return len(ids), [r for r in matched if r.channels and r.models]

    def _complete_study(self, study_uid: str, rules: RuleSet, name: str, due: DueSeries) -> int:
        """The one job of channels rule ``name`` for a study that completed (see the module
        docstring); returns 1 if a job to run was queued."""
        rule = next(r for r in rules if r.name == name)
        now = self._clock()
        spec = model_spec(rule)
        try:
            chosen = choose_channels(self._journal, study_uid, name, rule.channels or [], self._storage_dir)
        except MissingChannel as exc:
            inputs = exc.found or [JobInput(due.series.series_uid, due.series.generation)]
            job_id = self._journal.create_study_job(
                study_uid, spec, inputs=inputs, trigger=due.trigger, now=now, error=str(exc)
            )
            if job_id is not None:
                message = f"job {job_id} (study {study_uid}, rule {name}) failed: {exc}"
                self._journal.log_event(
                    "error", "job_failed", message, series_uid=inputs[0].series_uid, job_id=job_id, now=now
                )
                logger.error("%s", message)
            return 0
        if chosen is None:
            logger.debug("study %s: rule %s waits for a channel series still receiving", study_uid, name)
            return 0
        job_id = self._journal.create_study_job(
            study_uid, spec, inputs=chosen.inputs, trigger=due.trigger, now=now
        )
        if job_id is None:
            return 0
        key = chosen.inputs[0].series_uid
        for note in chosen.warnings:
            self._journal.log_event("warning", "job_warning", note, series_uid=key, job_id=job_id, now=now)
            logger.warning("study %s: %s", study_uid, note)
        logger.info(
            "study %s complete (%s): job %d, rule %s, channel series %s",
            study_uid,
            due.trigger,
            job_id,
            name,
            ", ".join(chosen.series_uids),
            extra={"hop": "series_complete", "job_id": job_id, "series_uid": key},
        )
        return 1

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
        """The header of the first readable instance of a series (an image when there is one), or
        None and why not."""
        problem = "the series has no instances"
        rows = self._journal.instances_of_series(series_uid)
        rows.sort(key=lambda r: not is_image_storage(r.sop_class_uid))  # stable: images first
        for row in rows:
            path = self._storage_dir / row.path
            try:
                return read_routing_header(path), ""
            except (OSError, UnreadableDatasetError) as exc:
                problem = f"cannot read the header: {exc} (instance {row.sop_instance_uid})"
            logger.warning("series %s: %s", series_uid, problem)
        return None, problem
