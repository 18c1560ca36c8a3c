"""Journal operations for the people who run the node (HTTP API, dashboard, operator commands, metrics):
filtered job lists, a job's deliveries and events, and the operator actions that put work back in the
queue (retry a finished job, resend a delivery, run a series again, queue a job for an HTTP request).

Every action is one transaction; an unknown row raises KeyError, a row in a state the action does not
apply to raises ValueError (``dicom_node.ops.actions`` turns both into an ``ActionError``). The operator
actions (``manual_*``, trigger ``manual``) follow issue 7's operator commands, which share them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from dicom_node.storage.journal.base import JournalBase
from dicom_node.storage.journal.records import (
    DeliveryRow,
    EventRow,
    JobRow,
    JobSpec,
    SeriesRow,
    delivery_row,
    event_row,
    job_row,
    series_row,
)
from dicom_node.storage.journal.states import ACTIVE_JOB_STATES, DeliveryState, JobState, SeriesState, Trigger


@dataclass(frozen=True)
class JobWithSeries:
    """A job and its series (None once the series was purged)."""

    job: JobRow
    series: SeriesRow | None


class FinishedJob(NamedTuple):
    """A finished job as the metrics see it: its stage timings and the quiet wait of its series."""

    id: int
    finished_at: float
    timings: dict[str, float]
    quiet_wait: float | None


class CreatedJob(NamedTuple):
    id: int
    series_uid: str
    generation: int
    trigger: Trigger


class DoneDelivery(NamedTuple):
    id: int
    created_at: float
    done_at: float


class OperatorOps(JournalBase):
    # ------------------------------------------------------------------ reading

    def find_jobs(
        self,
        *,
        states: Sequence[JobState] = (),
        rule: str | None = None,
        ae: str | None = None,
        since: float | None = None,
        until: float | None = None,
        series_uid: str | None = None,
        limit: int = 100,
    ) -> list[JobWithSeries]:
        """Jobs, newest first, with their series. ``states``: any of these states; ``ae``: the
        series' called or calling AE title; ``since``/``until``: bounds on the creation time."""
        where: list[str] = []
        params: list[Any] = []
        if states:
            where.append(f"j.state IN ({','.join('?' * len(states))})")
            params.extend(str(s) for s in states)
        if rule is not None:
            where.append("j.rule_name = ?")
            params.append(rule)
        if ae is not None:
            where.append("(s.called_ae = ? OR s.calling_ae = ?)")
            params.extend([ae, ae])
        if since is not None:
            where.append("j.created_at >= ?")
            params.append(since)
        if until is not None:
            where.append("j.created_at <= ?")
            params.append(until)
        if series_uid is not None:
            where.append("j.series_uid = ?")
            params.append(series_uid)
        sql = "SELECT j.* FROM jobs j LEFT JOIN series s ON s.series_uid = j.series_uid"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY j.id DESC LIMIT ?"
        params.append(limit)
        jobs = [job_row(r) for r in self._query(sql, params)]
        return self._with_series(jobs)

    def job_with_series(self, job_id: int) -> JobWithSeries | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._with_series([job_row(rows[0])])[0] if rows else None

    def _with_series(self, jobs: list[JobRow]) -> list[JobWithSeries]:
        uids = sorted({j.series_uid for j in jobs})
        series: dict[str, SeriesRow] = {}
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            rows = self._query(
                f"SELECT * FROM series WHERE series_uid IN ({','.join('?' * len(chunk))})", chunk
            )
            series.update((r["series_uid"], series_row(r)) for r in rows)
        return [JobWithSeries(j, series.get(j.series_uid)) for j in jobs]

    def deliveries_of_job(self, job_id: int) -> list[DeliveryRow]:
        rows = self._query("SELECT * FROM deliveries WHERE job_id = ? ORDER BY id", (job_id,))
        return [delivery_row(r) for r in rows]

    def deliveries_of_series(self, series_uid: str) -> list[DeliveryRow]:
        rows = self._query("SELECT * FROM deliveries WHERE series_uid = ? ORDER BY id", (series_uid,))
        return [delivery_row(r) for r in rows]

    def get_delivery(self, delivery_id: int) -> DeliveryRow | None:
        rows = self._query("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return delivery_row(rows[0]) if rows else None

    def events_of(
        self, *, job_id: int | None = None, series_uid: str | None = None, limit: int = 50
    ) -> list[EventRow]:
        if job_id is not None:
            rows = self._query(
                "SELECT * FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?", (job_id, limit)
            )
        else:
            rows = self._query(
                "SELECT * FROM events WHERE series_uid = ? ORDER BY id DESC LIMIT ?", (series_uid, limit)
            )
        return [event_row(r) for r in rows]

    def waiting_series(self) -> list[SeriesRow]:
        """Series still receiving (routed or not), oldest first: what completion waits for."""
        rows = self._query(
            "SELECT * FROM series WHERE state = ? ORDER BY first_received", (SeriesState.RECEIVING,)
        )
        return [series_row(r) for r in rows]

    def deliveries_by_destination(self) -> dict[str, dict[DeliveryState, int]]:
        rows = self._query(
            "SELECT destination, state, COUNT(*) AS n FROM deliveries GROUP BY destination, state"
        )
        out: dict[str, dict[DeliveryState, int]] = {}
        for r in rows:
            out.setdefault(str(r["destination"]), {})[DeliveryState(r["state"])] = int(r["n"])
        return out

    def delivery_retries(self) -> int:
        """Delivery attempts beyond the first, over the deliveries still in the journal."""
        rows = self._query("SELECT COALESCE(SUM(MAX(attempts - 1, 0)), 0) AS n FROM deliveries")
        return int(rows[0]["n"])

    def last_ids(self) -> tuple[int, int]:
        """The highest event id and job id (0 when none): where the metrics start counting."""
        rows = self._query(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM events) AS e,"
            " (SELECT COALESCE(MAX(id), 0) FROM jobs) AS j"
        )
        return int(rows[0]["e"]), int(rows[0]["j"])

    def events_after(self, event_id: int, limit: int = 1000) -> list[EventRow]:
        rows = self._query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (event_id, limit))
        return [event_row(r) for r in rows]

    def jobs_created_after(self, job_id: int, limit: int = 1000) -> list[CreatedJob]:
        rows = self._query(
            "SELECT id, series_uid, generation, trigger FROM jobs WHERE id > ? ORDER BY id LIMIT ?",
            (job_id, limit),
        )
        return [
            CreatedJob(int(r["id"]), str(r["series_uid"]), int(r["generation"]), Trigger(r["trigger"]))
            for r in rows
        ]

    def jobs_finished_since(self, at: float, limit: int = 1000) -> list[FinishedJob]:
        """Finished jobs (``done``/``empty``) with ``finished_at >= at``, oldest first, with the quiet
        wait of their series (job creation minus the series' last instance)."""
        rows = self._query(
            "SELECT j.id, j.finished_at, j.timings, j.created_at - s.last_received AS quiet_wait"
            " FROM jobs j LEFT JOIN series s ON s.series_uid = j.series_uid"
            " WHERE j.finished_at >= ? AND j.state IN (?, ?) ORDER BY j.finished_at, j.id LIMIT ?",
            (at, JobState.DONE, JobState.EMPTY, limit),
        )
        return [
            FinishedJob(
                int(r["id"]),
                float(r["finished_at"]),
                {str(k): float(v) for k, v in json.loads(r["timings"] or "{}").items()},
                None if r["quiet_wait"] is None else float(r["quiet_wait"]),
            )
            for r in rows
        ]

    def deliveries_done_since(self, at: float, limit: int = 1000) -> list[DoneDelivery]:
        rows = self._query(
            "SELECT id, created_at, done_at FROM deliveries WHERE state = ? AND done_at >= ?"
            " ORDER BY done_at, id LIMIT ?",
            (DeliveryState.DONE, at, limit),
        )
        return [DoneDelivery(int(r["id"]), float(r["created_at"]), float(r["done_at"])) for r in rows]

    def check_writable(self) -> None:
        """Commit a write (readiness check); raises the sqlite3 error when the journal cannot write."""
        with self._tx() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_write_check', datetime('now'))"
            )

    # ------------------------------------------------------------------ actions

    def queue_series_jobs(
        self, series_uid: str, specs: Sequence[JobSpec], *, trigger: Trigger, now: float
    ) -> list[int]:
        """Queue jobs for the current generation of a series whatever its completion state (an HTTP
        request's job). Pending jobs of the series are superseded; the series becomes ``queued``.
        Raises KeyError for an unknown series, ValueError for one without instances."""
        with self._tx() as cur:
            row = cur.execute("SELECT generation FROM series WHERE series_uid = ?", (series_uid,)).fetchone()
            if row is None:
                raise KeyError(f"series {series_uid} is not in the journal")
            has = cur.execute("SELECT 1 FROM instances WHERE series_uid = ? LIMIT 1", (series_uid,))
            if has.fetchone() is None:
                raise ValueError(f"series {series_uid} has no instances left")
            cur.execute(
                "UPDATE jobs SET state = ?, finished_at = ? WHERE series_uid = ? AND state = ?",
                (JobState.SUPERSEDED, now, series_uid, JobState.PENDING),
            )
            ids = [_insert_job(cur, series_uid, int(row["generation"]), spec, trigger, now) for spec in specs]
            cur.execute("UPDATE series SET state = ? WHERE series_uid = ?", (SeriesState.QUEUED, series_uid))
        return ids

    def manual_retry_job(self, job_id: int, *, now: float) -> int:
        """A new pending job doing what job ``job_id`` did, for the series' current generation.
        Raises KeyError for an unknown job, ValueError for one still to run."""
        with self._tx() as cur:
            job = cur.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                raise KeyError(f"no job {job_id}")
            if job["state"] in ACTIVE_JOB_STATES:
                raise ValueError(f"job {job_id} is {job['state']}: it runs already")
            return _manual_copy(cur, job, now)

    def manual_rerun_series(self, series_uid: str, *, rule: str | None, now: float) -> list[int]:
        """New pending jobs for the series' current instances: one per rule that ran models on it
        (only ``rule`` when given), as its latest job did. Raises KeyError when there is nothing."""
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT * FROM jobs WHERE series_uid = ? ORDER BY id", (series_uid,)
            ).fetchall()
            latest = {r["rule_name"]: r for r in rows if rule is None or r["rule_name"] == rule}
            if not latest:
                what = f"for rule {rule!r} " if rule else ""
                raise KeyError(f"no job {what}ever ran on series {series_uid}")
            return [_manual_copy(cur, job, now) for job in latest.values()]

    def manual_resend_delivery(self, delivery_id: int, *, now: float) -> int:
        """A new pending delivery of the same file to the same destination. Raises KeyError."""
        with self._tx() as cur:
            d = cur.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if d is None:
                raise KeyError(f"no delivery {delivery_id}")
            cur.execute(
                "INSERT INTO deliveries (job_id, series_uid, destination, path, sop_instance_uid,"
                " sop_class_uid, state, next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    d["job_id"],
                    d["series_uid"],
                    d["destination"],
                    d["path"],
                    d["sop_instance_uid"],
                    d["sop_class_uid"],
                    DeliveryState.PENDING,
                    now,
                    now,
                ),
            )
            new_id = int(cur.lastrowid or 0)
            _event(
                cur,
                now,
                d["series_uid"],
                d["job_id"],
                f"delivery {delivery_id} sent again as delivery {new_id}",
            )
            return new_id


def _insert_job(
    cur: sqlite3.Cursor, series_uid: str, generation: int, spec: JobSpec, trigger: Trigger, now: float
) -> int:
    cur.execute(
        "INSERT INTO jobs (series_uid, generation, rule_name, models, destinations, args, trigger, state,"
        " created_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            series_uid,
            generation,
            spec.rule_name,
            json.dumps(list(spec.models)),
            json.dumps(list(spec.destinations)),
            json.dumps(dict(spec.args), sort_keys=True),
            Trigger(trigger),
            JobState.PENDING,
            now,
        ),
    )
    return int(cur.lastrowid or 0)


def _event(cur: sqlite3.Cursor, now: float, series_uid: str, job_id: int | None, message: str) -> None:
    cur.execute(
        "INSERT INTO events (at, level, kind, series_uid, job_id, message)"
        " VALUES (?, 'info', 'manual', ?, ?, ?)",
        (now, series_uid, job_id, message),
    )


def _manual_copy(cur: sqlite3.Cursor, job: sqlite3.Row, now: float) -> int:
    series = cur.execute(
        "SELECT generation FROM series WHERE series_uid = ?", (job["series_uid"],)
    ).fetchone()
    if series is None:
        raise KeyError(f"series {job['series_uid']} is no longer in the journal")
    spec = JobSpec(
        rule_name=job["rule_name"],
        models=json.loads(job["models"]),
        destinations=json.loads(job["destinations"]),
        args=json.loads(job["args"]),
    )
    new_id = _insert_job(cur, job["series_uid"], int(series["generation"]), spec, Trigger.MANUAL, now)
    _event(cur, now, job["series_uid"], new_id, f"job {new_id} queued by hand (from job {job['id']})")
    return new_id
