"""Journal operations on jobs and deliveries (the work queues)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from dicom_node.storage.journal.base import JournalBase
from dicom_node.storage.journal.records import (
    DeliveryRow,
    DeliverySpec,
    JobOutput,
    JobRow,
    JobSpec,
    delivery_row,
    job_row,
)
from dicom_node.storage.journal.states import (
    FINISHED_JOB_STATES,
    DeliveryState,
    JobState,
    SeriesState,
    Trigger,
)


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
        """Queue one job per matched rule for ``generation`` of a series, if the series is still at
        that generation and receiving. Earlier pending jobs of the series are superseded. Returns the
        job ids, or [] if the series moved on meanwhile (a new instance arrived)."""
        trigger = Trigger(trigger)
        ids: list[int] = []
        with self._tx() as cur:
            row = cur.execute(
                "SELECT generation, state FROM series WHERE series_uid = ?", (series_uid,)
            ).fetchone()
            if row is None or row["generation"] != generation or row["state"] != SeriesState.RECEIVING:
                return []
            cur.execute(
                "UPDATE jobs SET state = ?, finished_at = ? WHERE series_uid = ? AND state = ?",
                (JobState.SUPERSEDED, now, series_uid, JobState.PENDING),
            )
            for spec in jobs:
                cur.execute(
                    "INSERT INTO jobs (series_uid, generation, rule_name, models, destinations,"
                    " args, trigger, state, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        series_uid,
                        generation,
                        spec.rule_name,
                        json.dumps(list(spec.models)),
                        json.dumps(list(spec.destinations)),
                        json.dumps(dict(spec.args), sort_keys=True),
                        trigger,
                        JobState.PENDING,
                        now,
                    ),
                )
                ids.append(int(cur.lastrowid or 0))
            cur.execute("UPDATE series SET state = ? WHERE series_uid = ?", (SeriesState.QUEUED, series_uid))
        return ids

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
        transaction. If the series received new instances since the job's generation, the job is
        ``superseded`` instead and nothing is queued (a newer job will deliver). Queuing a delivery
        supersedes pending deliveries of the same SOP instance to the same destination. Returns
        whether deliveries were queued (or would have been, for an empty list)."""
        state = JobState(state)
        if state not in FINISHED_JOB_STATES:
            raise ValueError(f"a job is finished as one of {', '.join(FINISHED_JOB_STATES)}, not {state}")
        with self._tx() as cur:
            job = cur.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                raise KeyError(job_id)
            series = cur.execute(
                "SELECT generation FROM series WHERE series_uid = ?", (job["series_uid"],)
            ).fetchone()
            current = series is not None and series["generation"] == job["generation"]
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
                cur.execute(
                    "UPDATE deliveries SET state = ? WHERE destination = ?"
                    " AND sop_instance_uid = ? AND state = ?",
                    (DeliveryState.SUPERSEDED, d.destination, d.sop_instance_uid, DeliveryState.PENDING),
                )
                cur.execute(
                    "INSERT INTO deliveries (job_id, series_uid, destination, path,"
                    " sop_instance_uid, sop_class_uid, state, next_attempt_at, created_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        job_id,
                        job["series_uid"],
                        d.destination,
                        d.path,
                        d.sop_instance_uid,
                        d.sop_class_uid,
                        DeliveryState.PENDING,
                        now,
                        now,
                    ),
                )
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
