"""Journal operations on jobs and deliveries (the work queues)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from dicom_node.storage.journal.base import JournalBase
from dicom_node.storage.journal.records import (
    DeliveryRow,
    DeliverySpec,
    JobInput,
    JobOutput,
    JobRow,
    JobSpec,
    delivery_row,
    encode_inputs,
    job_row,
)
from dicom_node.storage.journal.states import (
    ACTIVE_JOB_STATES,
    FINISHED_JOB_STATES,
    DeliveryState,
    JobState,
    SeriesState,
    Trigger,
)

# output kinds sent to destinations (NIfTI and others stay on disk)
DELIVERABLE_KINDS = frozenset({"seg", "rtstruct"})


class WorkOps(JournalBase):
    # ------------------------------------------------------------------ jobs

    def create_jobs(
        self,
        series_uid: str,
        *,
        generation: int,
        jobs: Sequence[JobSpec],
        trigger: Trigger,
        now: float,
    ) -> list[int]:
        """Complete ``generation`` of a series, if the series is still at that generation and
        receiving: one job per spec, in one transaction. Returns the ids of the jobs created (to be
        run by a worker, or forwarding jobs already done), or [] if the series moved on meanwhile
        (a new instance arrived).

        - pending jobs of earlier generations are superseded;
        - a model spec whose rule already has a job for this generation (the series was re-sent
          unchanged) runs nothing again: a finished result is delivered again to the spec's
          destinations (``redelivered`` event), a pending or running job is left to finish; a failed
          one is tried again by a new job;
        - a forwarding spec is a job done at once whose deliveries are the series' instances (those
          not already delivered to that destination since they were received).
        """
        trigger = Trigger(trigger)
        ids: list[int] = []
        with self._tx() as cur:
            row = cur.execute(
                "SELECT generation, state FROM series WHERE series_uid = ?", (series_uid,)
            ).fetchone()
            if row is None or row["generation"] != generation or row["state"] != SeriesState.RECEIVING:
                return []
            cur.execute(
                "UPDATE jobs SET state = ?, finished_at = ? WHERE series_uid = ? AND state = ?"
                " AND generation < ?",
                (JobState.SUPERSEDED, now, series_uid, JobState.PENDING, generation),
            )
            earlier = {
                (r["rule_name"], bool(r["forward"])): r
                for r in cur.execute(
                    "SELECT * FROM jobs WHERE series_uid = ? AND generation = ? AND state IN (?,?,?,?)"
                    " ORDER BY id",
                    (
                        series_uid,
                        generation,
                        JobState.PENDING,
                        JobState.RUNNING,
                        JobState.DONE,
                        JobState.EMPTY,
                    ),
                ).fetchall()
            }
            for spec in jobs:
                if spec.forward:
                    job_id = _queue_forwarding(cur, series_uid, generation, spec, trigger, now)
                    if job_id is not None:
                        ids.append(job_id)
                    continue
                done = earlier.get((spec.rule_name, False))
                if done is None:
                    ids.append(_insert_job(cur, series_uid, generation, spec, trigger, now))
                elif done["state"] in (JobState.DONE, JobState.EMPTY):
                    _redeliver(cur, job_row(done), spec, now)
            cur.execute(
                "UPDATE series SET state = ?, completions = completions + 1 WHERE series_uid = ?",
                (SeriesState.QUEUED, series_uid),
            )
        return ids

    def create_study_job(
        self,
        study_uid: str,
        spec: JobSpec,
        *,
        inputs: Sequence[JobInput],
        trigger: Trigger,
        now: float,
        error: str | None = None,
    ) -> int | None:
        """The one job of a ``channels`` rule for a completed study: keyed on the first input series
        (its ``series_uid`` and ``generation``), the channel series in ``inputs``. Returns its id, or
        None when nothing is to run:

        - an input series moved on since it was chosen (a new instance: it completes again, and the
          study job is made then);
        - a job of the rule with the same inputs at the same generations exists: pending or running,
          it is left to finish; done, its result is delivered again (an unchanged re-send); a failed
          one is tried again by a new job.

        Pending jobs of the rule on the study's series are superseded. With ``error`` (a channel no
        series fits) the job is made ``failed`` with that reason, so ``status`` shows it.
        """
        if not inputs:
            raise ValueError("a study job needs at least one input series")
        key = encode_inputs(inputs)
        first = inputs[0]
        with self._tx() as cur:
            for item in inputs:
                row = cur.execute(
                    "SELECT generation FROM series WHERE series_uid = ?", (item.series_uid,)
                ).fetchone()
                if row is None or row["generation"] != item.generation:
                    return None
            same = cur.execute(
                "SELECT * FROM jobs WHERE rule_name = ? AND forward = 0 AND series_uid = ? AND inputs = ?"
                " AND state IN (?,?,?,?) ORDER BY id DESC LIMIT 1",
                (
                    spec.rule_name,
                    first.series_uid,
                    key,
                    JobState.PENDING,
                    JobState.RUNNING,
                    JobState.DONE,
                    JobState.EMPTY,
                ),
            ).fetchone()
            if same is not None and error is None:
                if same["state"] in (JobState.DONE, JobState.EMPTY):
                    _redeliver(cur, job_row(same), spec, now)
                return None
            cur.execute(
                "UPDATE jobs SET state = ?, finished_at = ? WHERE rule_name = ? AND forward = 0"
                " AND state = ? AND series_uid IN (SELECT series_uid FROM series WHERE study_uid = ?)",
                (JobState.SUPERSEDED, now, spec.rule_name, JobState.PENDING, study_uid),
            )
            state = JobState.PENDING if error is None else JobState.FAILED
            job_id = _insert_job(
                cur, first.series_uid, first.generation, spec, trigger, now, state=state, inputs=inputs
            )
            if error is not None:
                cur.execute("UPDATE jobs SET error = ? WHERE id = ?", (error, job_id))
        return job_id

    def forward_received(self, series_uid: str, spec: JobSpec, *, now: float) -> int | None:
        """Forward the instances of a series not yet delivered to the spec's destinations since they
        were received (``forward_when: received``). Returns the forwarding job's id, or None when
        nothing was new."""
        with self._tx() as cur:
            row = cur.execute("SELECT generation FROM series WHERE series_uid = ?", (series_uid,)).fetchone()
            if row is None:
                return None
            return _queue_forwarding(cur, series_uid, int(row["generation"]), spec, Trigger.RECEIVED, now)

    def claim_job(self, now: float) -> JobRow | None:
        """Atomically take the oldest pending job that is due (``not_before``) and mark it running."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT * FROM jobs WHERE state = ? AND COALESCE(not_before, 0) <= ? ORDER BY id LIMIT 1",
                (JobState.PENDING, now),
            ).fetchone()
            if row is None:
                return None
            cur.execute(
                "UPDATE jobs SET state = ?, started_at = ?, attempts = attempts + 1 WHERE id = ?",
                (JobState.RUNNING, now, row["id"]),
            )
        return job_row(row, state=JobState.RUNNING, started_at=now, attempts=row["attempts"] + 1)

    def get_job(self, job_id: int) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_row(rows[0]) if rows else None

    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[JobRow]:
        if state is None:
            rows = self._query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query(
                "SELECT * FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?", (JobState(state), limit)
            )
        return [job_row(r) for r in rows]

    def finish_job(
        self,
        job_id: int,
        *,
        state: JobState,
        now: float,
        outputs: Sequence[JobOutput] = (),
        timings: Mapping[str, float] | None = None,
        error: str | None = None,
        deliveries: Sequence[DeliverySpec] = (),
    ) -> bool:
        """Close a running job (``done``, ``empty`` or ``failed``) and queue its deliveries, in one
        transaction. If the series (for a study job: any of its input series) received new instances
        since the job's generation, the job is ``superseded`` instead and nothing is queued (a newer
        job will deliver). Queuing a delivery supersedes pending deliveries of the same SOP instance
        to the same destination. Returns whether deliveries were queued (or would have been, for an
        empty list)."""
        state = JobState(state)
        if state not in FINISHED_JOB_STATES:
            raise ValueError(f"a job is finished as one of {', '.join(FINISHED_JOB_STATES)}, not {state}")
        with self._tx() as cur:
            job = cur.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                raise KeyError(job_id)
            current = all(
                _is_current(cur, uid, generation)
                for uid, generation in [(job["series_uid"], job["generation"])]
                + [(i.series_uid, i.generation) for i in job_row(job).inputs]
            )
            final_state = state if current or state == JobState.FAILED else JobState.SUPERSEDED
            cur.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, outputs = ?, timings = ?, error = ?"
                " WHERE id = ?",
                (
                    final_state,
                    now,
                    json.dumps([asdict(o) for o in outputs]),
                    json.dumps(dict(timings or {})),
                    error,
                    job_id,
                ),
            )
            if final_state == JobState.SUPERSEDED:
                return False
            for d in deliveries:
                _insert_delivery(cur, job_id, job["series_uid"], d, now)
        return True

    def retry_job(
        self, job_id: int, *, error: str, not_before: float | None = None, waited: bool = False
    ) -> None:
        """Put a running job back to pending (e.g. not enough GPU memory now), to be claimed again
        at ``not_before`` (at once when None). ``waited``: the job did not run (the executor asked
        to come back later), so the attempt its claim counted is given back in the same transaction;
        a claim that never finishes (the process died) keeps its attempt."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE jobs SET state = ?, error = ?, not_before = ?, attempts = MAX(attempts - ?, 0)"
                " WHERE id = ? AND state = ?",
                (JobState.PENDING, error, not_before, int(waited), job_id, JobState.RUNNING),
            )

    def next_job_time(self) -> float | None:
        """When the earliest pending job may be claimed (None: no pending job)."""
        rows = self._query(
            "SELECT MIN(COALESCE(not_before, 0)) AS t FROM jobs WHERE state = ?", (JobState.PENDING,)
        )
        value = rows[0]["t"] if rows else None
        return None if value is None else float(value)

    # ------------------------------------------------------------------ deliveries

    def claim_deliveries(
        self, now: float, *, destination: str | None = None, limit: int = 50
    ) -> list[DeliveryRow]:
        """Take due pending deliveries (of one destination when given) and mark them sending."""
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT * FROM deliveries WHERE state = ? AND next_attempt_at <= ?"
                " AND (? IS NULL OR destination = ?) ORDER BY next_attempt_at, id LIMIT ?",
                (DeliveryState.PENDING, now, destination, destination, limit),
            ).fetchall()
            for row in rows:
                cur.execute(
                    "UPDATE deliveries SET state = ?, attempts = attempts + 1 WHERE id = ?",
                    (DeliveryState.SENDING, row["id"]),
                )
        return [delivery_row(r, state=DeliveryState.SENDING, attempts=r["attempts"] + 1) for r in rows]

    def finish_delivery(
        self,
        delivery_id: int,
        *,
        ok: bool,
        now: float,
        status: int | None = None,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> None:
        """Record a delivery attempt: done, pending again at ``retry_at``, or failed for good."""
        with self._tx() as cur:
            state: DeliveryState
            if ok:
                state, next_at, done_at = DeliveryState.DONE, now, now
            elif retry_at is not None:
                state, next_at, done_at = DeliveryState.PENDING, retry_at, None
            else:
                state, next_at, done_at = DeliveryState.FAILED, now, now
            cur.execute(
                "UPDATE deliveries SET state = ?, next_attempt_at = ?, done_at = ?,"
                " last_status = ?, last_error = ? WHERE id = ?",
                (state, next_at, done_at, status, error, delivery_id),
            )

    def list_deliveries(self, limit: int = 100, state: DeliveryState | None = None) -> list[DeliveryRow]:
        if state is None:
            rows = self._query("SELECT * FROM deliveries ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query(
                "SELECT * FROM deliveries WHERE state = ? ORDER BY id DESC LIMIT ?",
                (DeliveryState(state), limit),
            )
        return [delivery_row(r) for r in rows]

    def next_delivery_time(self) -> float | None:
        rows = self._query(
            "SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE state = ?", (DeliveryState.PENDING,)
        )
        value = rows[0]["t"] if rows else None
        return None if value is None else float(value)


class ManualOps(JournalBase):
    """Operator actions (trigger ``manual``): each writes new work into the journal, where the running
    node's loops find it at their next pass (a few seconds at most)."""

    def manual_retry_job(self, job_id: int, *, now: float) -> int:
        """A new pending job doing what job ``job_id`` did, for the series' current generation.
        Raises KeyError for an unknown job, ValueError for a forwarding job or one still to run."""
        with self._tx() as cur:
            row = cur.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(f"no job {job_id}")
            job = job_row(row)
            if job.forward:
                raise ValueError(f"job {job_id} forwards instances; resend its deliveries instead")
            if job.state in ACTIVE_JOB_STATES:
                raise ValueError(f"job {job_id} is {job.state}: it runs already")
            return _manual_copy(cur, job, now)

    def manual_rerun_series(self, series_uid: str, *, rule: str | None, now: float) -> list[int]:
        """New pending jobs for the series' current instances: one per rule that ran models on it
        (only ``rule`` when given; a study job that took it as an input counts), as its latest job
        did. Raises KeyError when there is nothing."""
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT * FROM jobs WHERE (series_uid = ? OR inputs LIKE ?) AND forward = 0 ORDER BY id",
                (series_uid, f'%"{series_uid}"%'),  # a study job that took the series as an input
            ).fetchall()
            latest = {r["rule_name"]: job_row(r) for r in rows if rule is None or r["rule_name"] == rule}
            if not latest:
                what = f"for rule {rule!r} " if rule else ""
                raise KeyError(f"no job {what}ran models on series {series_uid}")
            return [_manual_copy(cur, job, now) for job in latest.values()]

    def manual_resend_delivery(self, delivery_id: int, *, now: float) -> int:
        """A new pending delivery of the same file to the same destination. Raises KeyError."""
        with self._tx() as cur:
            row = cur.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                raise KeyError(f"no delivery {delivery_id}")
            d = delivery_row(row)
            spec = DeliverySpec(d.destination, d.path, d.sop_instance_uid, d.sop_class_uid)
            new_id = _insert_delivery(cur, d.job_id, d.series_uid, spec, now)
            _event(
                cur,
                now,
                "manual",
                f"delivery {delivery_id} sent again as delivery {new_id} (trigger manual)",
                series_uid=d.series_uid,
                job_id=d.job_id,
            )
            return new_id


# ---------------------------------------------------------------------------------------- helpers


def _event(
    cur: sqlite3.Cursor,
    now: float,
    kind: str,
    message: str,
    *,
    series_uid: str,
    job_id: int,
    level: str = "info",
) -> None:
    cur.execute(
        "INSERT INTO events (at, level, kind, series_uid, job_id, message) VALUES (?,?,?,?,?,?)",
        (now, level, kind, series_uid, job_id, message),
    )


def _is_current(cur: sqlite3.Cursor, series_uid: str, generation: int) -> bool:
    row = cur.execute("SELECT generation FROM series WHERE series_uid = ?", (series_uid,)).fetchone()
    return row is not None and row["generation"] == generation


def _insert_job(
    cur: sqlite3.Cursor,
    series_uid: str,
    generation: int,
    spec: JobSpec,
    trigger: Trigger,
    now: float,
    *,
    state: JobState = JobState.PENDING,
    inputs: Sequence[JobInput] = (),
) -> int:
    closed = None if state == JobState.PENDING else now
    cur.execute(
        "INSERT INTO jobs (series_uid, generation, rule_name, models, destinations, args, trigger,"
        " state, created_at, forward, started_at, finished_at, inputs)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            series_uid,
            generation,
            spec.rule_name,
            json.dumps(list(spec.models)),
            json.dumps(list(spec.destinations)),
            json.dumps(dict(spec.args), sort_keys=True),
            Trigger(trigger),
            state,
            now,
            int(spec.forward),
            closed,
            closed,
            encode_inputs(inputs),
        ),
    )
    return int(cur.lastrowid or 0)


def _insert_delivery(cur: sqlite3.Cursor, job_id: int, series_uid: str, d: DeliverySpec, now: float) -> int:
    """Queue one delivery, superseding a pending one of the same SOP instance to the same place."""
    cur.execute(
        "UPDATE deliveries SET state = ? WHERE destination = ? AND sop_instance_uid = ? AND state = ?",
        (DeliveryState.SUPERSEDED, d.destination, d.sop_instance_uid, DeliveryState.PENDING),
    )
    cur.execute(
        "INSERT INTO deliveries (job_id, series_uid, destination, path, sop_instance_uid,"
        " sop_class_uid, state, next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            job_id,
            series_uid,
            d.destination,
            d.path,
            d.sop_instance_uid,
            d.sop_class_uid,
            DeliveryState.PENDING,
            now,
            now,
        ),
    )
    return int(cur.lastrowid or 0)


def _queue_forwarding(
    cur: sqlite3.Cursor, series_uid: str, generation: int, spec: JobSpec, trigger: Trigger, now: float
) -> int | None:
    """A forwarding job (done at once) with one delivery per (destination, instance) not delivered
    or queued there since the instance was received; None when there is nothing to send."""
    instances = cur.execute(
        "SELECT sop_instance_uid, sop_class_uid, path, received_at FROM instances WHERE series_uid = ?"
        " ORDER BY received_at, sop_instance_uid",
        (series_uid,),
    ).fetchall()
    todo: list[DeliverySpec] = []
    for dest in spec.destinations:
        for inst in instances:
            sent = cur.execute(
                "SELECT 1 FROM deliveries WHERE destination = ? AND sop_instance_uid = ? AND path = ?"
                " AND state IN (?,?,?) AND created_at >= ? LIMIT 1",
                (
                    dest,
                    inst["sop_instance_uid"],
                    inst["path"],
                    DeliveryState.PENDING,
                    DeliveryState.SENDING,
                    DeliveryState.DONE,
                    inst["received_at"],
                ),
            ).fetchone()
            if sent is None:
                todo.append(DeliverySpec(dest, inst["path"], inst["sop_instance_uid"], inst["sop_class_uid"]))
    if not todo:
        return None
    job_id = _insert_job(cur, series_uid, generation, spec, trigger, now, state=JobState.DONE)
    for d in todo:
        _insert_delivery(cur, job_id, series_uid, d, now)
    return job_id


def _redeliver(cur: sqlite3.Cursor, job: JobRow, spec: JobSpec, now: float) -> None:
    """Deliver a finished job's results again (the series was re-sent unchanged)."""
    count = 0
    for out in job.outputs:
        if out.kind not in DELIVERABLE_KINDS or not out.sop_instance_uid or not out.sop_class_uid:
            continue
        for dest in spec.destinations:
            _insert_delivery(
                cur,
                job.id,
                job.series_uid,
                DeliverySpec(dest, out.path, out.sop_instance_uid, out.sop_class_uid),
                now,
            )
            count += 1
    _event(
        cur,
        now,
        "redelivered",
        f"series {job.series_uid} re-sent unchanged: job {job.id} not run again,"
        f" its result queued again ({count} delivery(ies))",
        series_uid=job.series_uid,
        job_id=job.id,
    )


def _manual_copy(cur: sqlite3.Cursor, job: JobRow, now: float) -> int:
    """A pending copy of ``job`` on the current generation of its series (every input series of a
    study job)."""
    generations: dict[str, int] = {}
    for uid in [job.series_uid, *(i.series_uid for i in job.inputs)]:
        series = cur.execute("SELECT generation FROM series WHERE series_uid = ?", (uid,)).fetchone()
        if series is None:
            raise KeyError(f"series {uid} is no longer in the journal")
        generations[uid] = int(series["generation"])
    inputs = [JobInput(i.series_uid, generations[i.series_uid]) for i in job.inputs]
    spec = JobSpec(rule_name=job.rule_name, models=job.models, destinations=job.destinations, args=job.args)
    new_id = _insert_job(
        cur, job.series_uid, generations[job.series_uid], spec, Trigger.MANUAL, now, inputs=inputs
    )
    _event(
        cur,
        now,
        "manual",
        f"job {new_id} queued by hand (from job {job.id})",
        series_uid=job.series_uid,
        job_id=new_id,
    )
    return new_id
