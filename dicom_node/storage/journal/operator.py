"""Journal operations for the people who run the node (HTTP API, dashboard, operator commands, metrics):
filtered job lists, a job's deliveries and events, and the operator actions that put work back in the
queue (retry a failed job, resend a delivery, run a series again, queue a job for an HTTP request).

Every action is one transaction that checks the row is in a state the action makes sense for and
returns what it did, so a caller can answer "409: job 7 is running" instead of guessing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dicom_node.storage.journal.base import JournalBase
from dicom_node.storage.journal.records import JobSpec, decode_job, decode_series

#: Job states an operator may retry (a pending or running job is still on its way).
RETRYABLE_JOB_STATES = ("failed", "done", "empty")
#: Delivery states an operator may resend (a pending or sending delivery is on its way already).
RESENDABLE_DELIVERY_STATES = ("failed", "done")


@dataclass(frozen=True)
class ActionOutcome:
    """What an operator action did: ``ok`` and the id of the row it queued, or why it did nothing
    (``missing``: no such row; otherwise the row's state did not allow it)."""

    ok: bool
    ids: tuple[int, ...] = ()
    reason: str = ""
    missing: bool = False


_JOB_COLUMNS = (
    "j.*, s.called_ae AS called_ae, s.calling_ae AS calling_ae, s.modality AS modality,"
    " s.series_description AS series_description, s.study_uid AS study_uid"
)


class OperatorOps(JournalBase):
    # ------------------------------------------------------------------ reading

    def find_jobs(
        self,
        *,
        state: Sequence[str] = (),
        rule: str | None = None,
        ae: str | None = None,
        since: float | None = None,
        until: float | None = None,
        series_uid: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Jobs, newest first, with their series' AE titles, modality and description. ``state``: any
        of these states; ``ae``: the series' called or calling AE title; ``since``/``until``: bounds
        on the creation time."""
        where: list[str] = []
        params: list[Any] = []
        if state:
            where.append(f"j.state IN ({','.join('?' * len(state))})")
            params.extend(state)
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
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs j LEFT JOIN series s ON s.series_uid = j.series_uid"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY j.id DESC LIMIT ?"
        params.append(limit)
        return [decode_job(r) for r in self._query(sql, params)]

    def job_details(self, job_id: int) -> dict[str, Any] | None:
        rows = self._query(
            f"SELECT {_JOB_COLUMNS} FROM jobs j LEFT JOIN series s ON s.series_uid = j.series_uid"
            " WHERE j.id = ?",
            (job_id,),
        )
        return decode_job(rows[0]) if rows else None

    def deliveries_of_job(self, job_id: int) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM deliveries WHERE job_id = ? ORDER BY id", (job_id,))

    def deliveries_of_series(self, series_uid: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM deliveries WHERE series_uid = ? ORDER BY id", (series_uid,))

    def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return rows[0] if rows else None

    def events_of(
        self, *, job_id: int | None = None, series_uid: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        if job_id is not None:
            return self._query(
                "SELECT * FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?", (job_id, limit)
            )
        return self._query(
            "SELECT * FROM events WHERE series_uid = ? ORDER BY id DESC LIMIT ?", (series_uid, limit)
        )

    def waiting_series(self) -> list[dict[str, Any]]:
        """Series still receiving (routed or not), oldest first: what completion waits for."""
        rows = self._query("SELECT * FROM series WHERE state = 'receiving' ORDER BY first_received")
        return [decode_series(r) for r in rows]

    def deliveries_by_destination(self) -> dict[str, dict[str, int]]:
        rows = self._query(
            "SELECT destination, state, COUNT(*) AS n FROM deliveries GROUP BY destination, state"
        )
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(str(r["destination"]), {})[str(r["state"])] = int(r["n"])
        return out

    def delivery_retries(self) -> int:
        """Delivery attempts beyond the first, over the deliveries still in the journal."""
        rows = self._query("SELECT COALESCE(SUM(MAX(attempts - 1, 0)), 0) AS n FROM deliveries")
        return int(rows[0]["n"])

    def events_after(self, event_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (event_id, limit))

    def jobs_created_after(self, job_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        return self._query(
            "SELECT id, series_uid, generation, trigger FROM jobs WHERE id > ? ORDER BY id LIMIT ?",
            (job_id, limit),
        )

    def jobs_finished_since(self, at: float, limit: int = 1000) -> list[dict[str, Any]]:
        """Finished jobs (``done``/``empty``) with ``finished_at >= at``, oldest first, with the quiet
        wait of their series (job creation minus the series' last instance)."""
        rows = self._query(
            "SELECT j.id, j.state, j.finished_at, j.timings, j.created_at - s.last_received AS quiet_wait"
            " FROM jobs j LEFT JOIN series s ON s.series_uid = j.series_uid"
            " WHERE j.finished_at >= ? AND j.state IN ('done', 'empty')"
            " ORDER BY j.finished_at, j.id LIMIT ?",
            (at, limit),
        )
        for r in rows:
            r["timings"] = json.loads(r["timings"]) if r["timings"] else {}
        return rows

    def deliveries_done_since(self, at: float, limit: int = 1000) -> list[dict[str, Any]]:
        return self._query(
            "SELECT id, destination, created_at, done_at FROM deliveries"
            " WHERE state = 'done' AND done_at >= ? ORDER BY done_at, id LIMIT ?",
            (at, limit),
        )

    # ------------------------------------------------------------------ actions

    def queue_series_jobs(
        self, series_uid: str, specs: Sequence[JobSpec], *, trigger: str, now: float
    ) -> ActionOutcome:
        """Queue jobs for the current generation of a series whatever its completion state (an
        operator's rerun, an HTTP request). Pending jobs of the series are superseded; the series
        becomes ``queued``."""
        with self._tx() as cur:
            row = cur.execute("SELECT generation FROM series WHERE series_uid = ?", (series_uid,)).fetchone()
            if row is None:
                return ActionOutcome(False, reason=f"series {series_uid} is not in the journal", missing=True)
            if (
                cur.execute("SELECT 1 FROM instances WHERE series_uid = ? LIMIT 1", (series_uid,)).fetchone()
                is None
            ):
                return ActionOutcome(False, reason=f"series {series_uid} has no instances left")
            cur.execute(
                "UPDATE jobs SET state = 'superseded', finished_at = ?"
                " WHERE series_uid = ? AND state = 'pending'",
                (now, series_uid),
            )
            ids: list[int] = []
            for spec in specs:
                cur.execute(
                    "INSERT INTO jobs (series_uid, generation, rule_name, models, destinations, args,"
                    " trigger, state, created_at) VALUES (?,?,?,?,?,?,?,'pending',?)",
                    (
                        series_uid,
                        int(row["generation"]),
                        spec.rule_name,
                        json.dumps(list(spec.models)),
                        json.dumps(list(spec.destinations)),
                        json.dumps(dict(spec.args), sort_keys=True),
                        trigger,
                        now,
                    ),
                )
                ids.append(int(cur.lastrowid or 0))
            cur.execute("UPDATE series SET state = 'queued' WHERE series_uid = ?", (series_uid,))
        return ActionOutcome(True, ids=tuple(ids))

    def retry_finished_job(self, job_id: int, *, now: float) -> ActionOutcome:
        """A finished job of the series' current generation goes back to the queue as a new job with
        the same rule, models, destinations and arguments (the old row keeps its history)."""
        with self._tx() as cur:
            job = cur.execute(
                "SELECT j.*, s.generation AS current FROM jobs j LEFT JOIN series s"
                " ON s.series_uid = j.series_uid WHERE j.id = ?",
                (job_id,),
            ).fetchone()
            if job is None:
                return ActionOutcome(False, reason=f"job {job_id} is not in the journal", missing=True)
            if job["state"] not in RETRYABLE_JOB_STATES:
                return ActionOutcome(
                    False, reason=f"job {job_id} is {job['state']}; only finished jobs are retried"
                )
            if job["current"] is None or job["current"] != job["generation"]:
                return ActionOutcome(
                    False, reason=f"series {job['series_uid']} changed since job {job_id}; rerun the series"
                )
            cur.execute(
                "INSERT INTO jobs (series_uid, generation, rule_name, models, destinations, args, trigger,"
                " state, created_at) VALUES (?,?,?,?,?,?,'manual','pending',?)",
                (
                    job["series_uid"],
                    job["generation"],
                    job["rule_name"],
                    job["models"],
                    job["destinations"],
                    job["args"],
                    now,
                ),
            )
            new_id = int(cur.lastrowid or 0)
            cur.execute(
                "INSERT INTO events (at, level, kind, series_uid, job_id, message)"
                " VALUES (?, 'info', 'job_retried', ?, ?, ?)",
                (now, job["series_uid"], job_id, f"job {job_id} retried as job {new_id}"),
            )
        return ActionOutcome(True, ids=(new_id,))

    def resend_delivery(self, delivery_id: int, *, now: float) -> ActionOutcome:
        """A failed (or delivered) delivery is sent again: pending now, attempts from zero."""
        with self._tx() as cur:
            row = cur.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                return ActionOutcome(
                    False, reason=f"delivery {delivery_id} is not in the journal", missing=True
                )
            if row["state"] not in RESENDABLE_DELIVERY_STATES:
                return ActionOutcome(
                    False,
                    reason=f"delivery {delivery_id} is {row['state']}; only failed or done ones are resent",
                )
            cur.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, done_at = NULL"
                " WHERE id = ?",
                (now, delivery_id),
            )
            cur.execute(
                "INSERT INTO events (at, level, kind, series_uid, job_id, message)"
                " VALUES (?, 'info', 'delivery_resent', ?, ?, ?)",
                (
                    now,
                    row["series_uid"],
                    row["job_id"],
                    f"delivery {delivery_id} to {row['destination']} resent",
                ),
            )
        return ActionOutcome(True, ids=(delivery_id,))

    def check_writable(self) -> None:
        """Commit a write (readiness check); raises the sqlite3 error when the journal cannot write."""
        with self._tx() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_write_check', datetime('now'))"
            )
