"""Inference workers: claim jobs from the journal, run them through an Executor, queue the results.

Each worker thread claims the oldest due job (``journal.claim_job``), resolves the image instance
files of its series (of a study job: of each input series, in channel order, chosen when the study
completed) from the journal, and calls ``executor.run`` with a fresh output folder
``storage_dir/outputs/<series_uid>/job-<id>/``. The outcome is recorded in one journal transaction
(``finish_job``), which also queues one delivery per (destination, SEG/RTSTRUCT output) unless the
series changed meanwhile (then the job is superseded and a newer job delivers).

Failures: :class:`inference.api.RetryLater` (not enough GPU memory now, cluster unreachable) and
torch's CUDA out-of-memory put the job back after the executor's ``retry_after`` (else
``retry_delay``) and are a wait, not an attempt (the claim's attempt is given back, so an outage of
any length fails nothing); a deterministic error (the series cannot be loaded: gap, mixed sizes, no image; the
spec or the arguments are invalid; the result cannot be encoded) fails the job at once, since running
it again would fail the same way; any other error is retried until the job has had ``max_attempts``
attempts. A failure's reason goes to the journal (job row and an error event), where
``dicom-node status`` shows it. Workers never run in
an association's thread: they only meet the receiver through the journal.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

from dicom_node.pipeline.loop import Clock, LoopService, LoopThread
from dicom_node.pipeline.study_inputs import image_instances
from dicom_node.storage.journal import (
    INTERRUPTED_PREFIX,
    DeliverySpec,
    InstanceRow,
    JobOutput,
    JobRow,
    JobState,
)
from dicom_node.storage.journal.event_log import EventLog
from dicom_node.storage.journal.jobs import DELIVERABLE_KINDS
from inference.api import Executor, InferenceRequest, InferenceResult, RetryLater
from inference.errors import ArgsError, SegWriteError, SeriesError, SpecError
from inference.inflate_guard import DEFAULT_MAX_INFLATED_BYTES

logger = logging.getLogger(__name__)


# the same inputs fail the same way: no retry
DETERMINISTIC_ERRORS: tuple[type[Exception], ...] = (SeriesError, SpecError, ArgsError, SegWriteError)


class WorkerJournal(EventLog, Protocol):
    """What the workers need of :class:`dicom_node.storage.journal.Journal`."""

    def claim_job(self, now: float) -> JobRow | None: ...
    def next_job_time(self) -> float | None: ...
    def instances_of_series(self, series_uid: str) -> list[InstanceRow]: ...
    def retry_job(
        self, job_id: int, *, error: str, not_before: float | None = ..., waited: bool = ...
    ) -> None: ...

    def finish_job(
        self,
        job_id: int,
        *,
        state: JobState,
        now: float,
        outputs: Sequence[JobOutput] = ...,
        timings: Mapping[str, float] | None = ...,
        error: str | None = ...,
        deliveries: Sequence[DeliverySpec] = ...,
    ) -> bool: ...


def _content_key(rows: Sequence[InstanceRow]) -> str:
    """What an input series holds: a digest of its SOP instances and their data set hashes (the same
    after a journal rebuild; changed by a new or changed instance)."""
    items = sorted(f"{r.sop_instance_uid}:{r.digest or r.size}" for r in rows)
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:32]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Worker(LoopService):
    """``threads`` inference worker threads over one executor (GPU jobs one at a time by default)."""

    def __init__(
        self,
        journal: WorkerJournal,
        executor: Executor,
        *,
        storage_dir: Path,
        empty_result: Literal["empty_seg", "skip"] = "empty_seg",
        max_attempts: int = 2,
        retry_delay: float = 30.0,
        max_retryable_attempts: int = 20,
        max_dataset_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
        on_deliveries: Callable[[], None] | None = None,
        threads: int = 1,
        clock: Clock = time.time,
        max_poll: float = 5.0,
    ) -> None:
        self._journal = journal
        self._executor = executor
        self._storage_dir = Path(storage_dir)
        self._empty_result = empty_result
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._max_retryable_attempts = max(max_retryable_attempts, max_attempts)
        self._max_dataset_bytes = max_dataset_bytes
        self._on_deliveries = on_deliveries or (lambda: None)
        self._clock = clock
        self._loop = LoopThread("worker", self.run_next, clock=clock, max_poll=max_poll, threads=threads)

    # ------------------------------------------------------------------ work

    def run_next(self) -> float | None:
        """Claim and run one job; returns when to look again (now if a job ran)."""
        job = self._journal.claim_job(self._clock())
        if job is None:
            return self._journal.next_job_time()
        try:
            self.run_job(job)
        except Exception as exc:  # one job's failure (outside the executor) must not stop the others
            logger.exception("job %d: unexpected error", job.id)
            self._give_back(job, f"unexpected error: {_describe(exc)}")
        return self._clock()

    def run_job(self, job: JobRow) -> None:
        job_id = job.id
        series_uid = job.series_uid
        if job.attempts > self._max_attempts and (job.error or "").startswith(INTERRUPTED_PREFIX):
            # each claim counted an attempt: a job that takes the process down does not loop forever
            self._fail(job, f"gave up after {job.attempts - 1} attempt(s); last: {job.error}")
            return
        if job.attempts > self._max_retryable_attempts:
            last = job.error or "none recorded (the node may have stopped or died during the job)"
            self._fail(job, f"gave up after {job.attempts - 1} attempt(s); last error: {last}")
            return
        # vendor objects, SR, SEG... filed in a series are never given to a model
        series_uids = [i.series_uid for i in job.inputs] or [series_uid]
        per_series = [image_instances(self._journal.instances_of_series(uid)) for uid in series_uids]
        for uid, rows in zip(series_uids, per_series, strict=True):
            if not rows:
                self._fail(job, f"series {uid} has no image instances in the journal")
                return
        inputs = [[self._storage_dir / r.path for r in rows] for rows in per_series]
        output_dir = self._storage_dir / "outputs" / series_uid / f"job-{job_id}"
        if output_dir.exists():
            shutil.rmtree(output_dir)  # left by an attempt that did not finish
        output_dir.mkdir(parents=True)
        request = InferenceRequest(
            inputs=inputs,
            input_versions=[_content_key(rows) for rows in per_series] if len(inputs) > 1 else None,
            models=list(job.models),
            args=dict(job.args),
            output_dir=output_dir,
            empty_result=self._empty_result,
            max_inflated_bytes=self._max_dataset_bytes,
        )
        logger.info(
            "job %d: series %s (%s instances), models %s, rule %s, attempt %d",
            job_id,
            series_uid,
            "+".join(str(len(i)) for i in inputs),
            "+".join(job.models),
            job.rule_name,
            job.attempts,
        )
        started = time.monotonic()
        try:
            result = self._executor.run(request)
        except RetryLater as exc:
            delay = self._retry_delay if exc.retry_after is None else max(0.0, exc.retry_after)
            self._retry(job, _describe(exc), delay=delay, waited=True)
            return
        except Exception as exc:
            logger.debug("job %d failed", job_id, exc_info=True)
            if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda's (torch is not imported here)
                self._retry(job, _describe(exc), delay=self._retry_delay, waited=True)
            elif isinstance(exc, DETERMINISTIC_ERRORS):
                self._fail(job, _describe(exc))
            elif job.attempts < self._max_attempts:
                self._retry(job, _describe(exc), delay=0.0)
            else:
                self._fail(job, _describe(exc))
            return
        self._finish(job, result, output_dir, wall=time.monotonic() - started)

    # ------------------------------------------------------------------ outcomes

    def _finish(self, job: JobRow, result: InferenceResult, request_dir: Path, *, wall: float) -> None:
        job_id = job.id
        outputs: list[JobOutput] = []
        deliveries: list[DeliverySpec] = []
        for out in result.outputs:
            path = Path(out.path)
            rel = self._relative(path if path.is_absolute() else request_dir / path)
            outputs.append(JobOutput(rel, out.kind, out.sop_instance_uid, out.sop_class_uid))
            if out.kind in DELIVERABLE_KINDS and out.sop_instance_uid and out.sop_class_uid:
                for dest in job.destinations:
                    deliveries.append(DeliverySpec(dest, rel, out.sop_instance_uid, out.sop_class_uid))
        state = JobState.EMPTY if result.empty else JobState.DONE
        timings = {k: float(v) for k, v in dict(result.timings).items()}
        timings["job"] = wall  # the worker's view: claim to result, all stages
        queued = self._journal.finish_job(
            job_id,
            state=state,
            now=self._clock(),
            outputs=outputs,
            timings=timings,
            deliveries=deliveries,
        )
        for warning in result.warnings:
            self._journal.log_event(
                "warning", "job_warning", str(warning), series_uid=job.series_uid, job_id=job_id
            )
        if not queued:
            logger.info("job %d superseded: series %s changed while it ran", job_id, job.series_uid)
            return
        logger.info(
            "job %d %s in %.1f s: %d output(s), %d delivery(ies) queued",
            job_id,
            state,
            wall,
            len(outputs),
            len(deliveries),
            extra={"hop": "job", "job_id": job_id, "series_uid": job.series_uid, "ms": round(wall * 1000)},
        )
        if deliveries:
            self._on_deliveries()

    def _retry(self, job: JobRow, error: str, *, delay: float, waited: bool = False) -> None:
        job_id = job.id
        now = self._clock()
        not_before = now + delay if delay > 0 else None
        self._journal.retry_job(job_id, error=error, not_before=not_before, waited=waited)
        self._journal.log_event(
            "warning",
            "job_retry",
            f"job {job_id} attempt {job.attempts} failed, retrying in {delay:.0f} s: {error}",
            series_uid=job.series_uid,
            job_id=job_id,
            now=now,
        )
        logger.warning(
            "job %d attempt %d failed (%s); retrying in %.0f s", job_id, job.attempts, error, delay
        )
        if delay <= 0:
            self.wake()

    def _give_back(self, job: JobRow, error: str) -> None:
        """Retry or fail a job whose run raised outside the executor, as an executor error would."""
        if job.attempts < self._max_attempts:
            self._retry(job, error, delay=self._retry_delay)
        else:
            self._fail(job, error)

    def _fail(self, job: JobRow, error: str) -> None:
        job_id = job.id
        now = self._clock()
        self._journal.finish_job(job_id, state=JobState.FAILED, now=now, error=error)
        self._journal.log_event(
            "error",
            "job_failed",
            f"job {job_id} (series {job.series_uid}, rule {job.rule_name}) failed: {error}",
            series_uid=job.series_uid,
            job_id=job_id,
            now=now,
        )
        logger.error("job %d failed: %s", job_id, error)

    def _relative(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self._storage_dir.resolve()))
        except ValueError:
            return str(path)
