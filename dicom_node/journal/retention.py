"""Journal operations for retention: which series are past the retention period, what a purge must
remove, and the removal of their rows.

A series' last activity is the latest of its ``last_received``, the ``finished_at`` of its jobs and the
``done_at`` of its deliveries. A series whose last activity is at or before the cutoff is *expired*;
it may be purged unless its work is unfinished (:func:`blockers`): a pending or running job, a pending
or sending delivery, or a series still receiving (not routed yet, or within its quiet period).

A purge is planned (:meth:`RetentionOps.purge_plan`), its files are removed by the caller, and then
:meth:`RetentionOps.purge_series` deletes the rows in one transaction, but only if nothing happened to
the series since the plan (same generation, same jobs, still expired, nothing unfinished).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dicom_node.journal.base import JournalBase

_ACTIVE_JOBS = ("pending", "running")
_ACTIVE_DELIVERIES = ("pending", "sending")
_CHUNK = 500  # ids per ``IN (...)`` list

_EXPIRED_SQL = """
WITH j AS (
    SELECT series_uid, MAX(finished_at) AS finished,
           SUM(state IN ('pending', 'running')) AS active
    FROM jobs GROUP BY series_uid
), d AS (
    SELECT series_uid, MAX(done_at) AS done,
           SUM(state IN ('pending', 'sending')) AS active, GROUP_CONCAT(id) AS ids
    FROM deliveries GROUP BY series_uid
), s AS (
    SELECT series.series_uid, series.study_uid, series.state, series.generation,
           series.instance_count, series.last_received, series.rules, series.quiet_seconds,
           MAX(series.last_received, COALESCE(j.finished, 0), COALESCE(d.done, 0)) AS last_activity,
           COALESCE(j.active, 0) AS active_jobs, COALESCE(d.active, 0) AS active_deliveries,
           COALESCE(d.ids, '') AS delivery_ids
    FROM series
    LEFT JOIN j ON j.series_uid = series.series_uid
    LEFT JOIN d ON d.series_uid = series.series_uid
    WHERE series.last_received <= ?
)
SELECT * FROM s WHERE last_activity <= ? ORDER BY last_activity, series_uid
"""


@dataclass(frozen=True)
class PlannedInstance:
    sop_instance_uid: str
    path: str  # relative to storage_dir, as recorded
    received_at: float
    size: int


@dataclass(frozen=True)
class PurgePlan:
    """What a purge of one series removes, as the journal saw it when planned."""

    series_uid: str
    study_uid: str
    generation: int
    last_activity: float
    instances: tuple[PlannedInstance, ...]
    job_ids: tuple[int, ...]
    delivery_ids: tuple[int, ...]


@dataclass(frozen=True)
class PurgeCounts:
    """Rows deleted by :meth:`RetentionOps.purge_series`."""

    instances: int
    jobs: int
    deliveries: int


def blockers(row: Mapping[str, Any], now: float) -> list[str]:
    """Why an expired series may not be purged yet (empty: it may). ``row`` carries the columns of
    :meth:`RetentionOps.expired_series`: state, rules, last_received, quiet_seconds, active_jobs and
    active_deliveries."""
    why: list[str] = []
    if row["active_jobs"]:
        why.append(f"{row['active_jobs']} pending or running job(s)")
    if row["active_deliveries"]:
        why.append(f"{row['active_deliveries']} pending or sending delivery(ies)")
    if row["state"] == "receiving":
        if row["rules"] is None:
            why.append("still receiving (not routed yet)")
        elif float(row["last_received"]) + float(row["quiet_seconds"] or 0.0) > now:
            why.append("still receiving (within its quiet period)")
    return why


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _marks(ids: Sequence[int]) -> str:
    return ",".join("?" * len(ids))


class RetentionOps(JournalBase):
    def expired_series(self, cutoff: float) -> list[dict[str, Any]]:
        """Series whose last activity is at or before ``cutoff``, oldest first, with the columns
        :func:`blockers` needs, ``last_activity`` and ``delivery_ids`` (for :meth:`purge_plan`).
        One pass over jobs and deliveries (deliveries have no index by series)."""
        rows = self._query(_EXPIRED_SQL, (cutoff, cutoff))
        for row in rows:
            if isinstance(row.get("rules"), str):
                row["rules"] = json.loads(row["rules"])
            row["delivery_ids"] = sorted(int(i) for i in str(row["delivery_ids"]).split(",") if i)
        return rows

    def purge_plan(self, series_uid: str, delivery_ids: Sequence[int] = ()) -> PurgePlan | None:
        """The rows (and so the files) a purge of ``series_uid`` removes; None if it is gone.
        ``delivery_ids``: the series' deliveries as :meth:`expired_series` listed them (a series
        whose jobs all finished gets no new delivery without a new job, which
        :meth:`purge_series` notices)."""
        with self._tx() as cur:
            series = cur.execute(
                "SELECT study_uid, generation, last_received FROM series WHERE series_uid = ?",
                (series_uid,),
            ).fetchone()
            if series is None:
                return None
            instances = cur.execute(
                "SELECT sop_instance_uid, path, received_at, size FROM instances WHERE series_uid = ?"
                " ORDER BY path",
                (series_uid,),
            ).fetchall()
            jobs = cur.execute(
                "SELECT id, finished_at FROM jobs WHERE series_uid = ? ORDER BY id", (series_uid,)
            ).fetchall()
            job_ids = [int(j["id"]) for j in jobs]
            deliveries: list[sqlite3.Row] = []
            for chunk in _chunks(list(delivery_ids)):
                deliveries += cur.execute(
                    f"SELECT id, done_at FROM deliveries WHERE id IN ({_marks(chunk)}) AND series_uid = ?",
                    (*chunk, series_uid),
                ).fetchall()
        times = [float(series["last_received"])]
        times += [float(j["finished_at"]) for j in jobs if j["finished_at"] is not None]
        times += [float(d["done_at"]) for d in deliveries if d["done_at"] is not None]
        return PurgePlan(
            series_uid=series_uid,
            study_uid=str(series["study_uid"]),
            generation=int(series["generation"]),
            last_activity=max(times),
            instances=tuple(
                PlannedInstance(
                    str(r["sop_instance_uid"]), str(r["path"]), float(r["received_at"]), int(r["size"])
                )
                for r in instances
            ),
            job_ids=tuple(job_ids),
            delivery_ids=tuple(sorted(int(d["id"]) for d in deliveries)),
        )

    def purge_series(
        self, plan: PurgePlan, *, cutoff: float, now: float, note: str = ""
    ) -> PurgeCounts | None:
        """Delete the rows of a planned purge (instances, deliveries, jobs, the series) and write a
        ``retention_purged`` event, in one transaction; ``note`` (what happened to the files) ends
        the event's message. Returns None and deletes nothing if the series changed since the plan:
        new instances (generation), new jobs, activity after ``cutoff``, or unfinished work."""
        uid = plan.series_uid
        with self._tx() as cur:
            series = cur.execute(
                "SELECT state, generation, rules, last_received, quiet_seconds FROM series"
                " WHERE series_uid = ?",
                (uid,),
            ).fetchone()
            if series is None or int(series["generation"]) != plan.generation:
                return None
            if float(series["last_received"]) > cutoff:
                return None
            jobs = cur.execute(
                "SELECT id, state, finished_at FROM jobs WHERE series_uid = ?", (uid,)
            ).fetchall()
            if sorted(int(j["id"]) for j in jobs) != sorted(plan.job_ids):
                return None
            if any(j["finished_at"] is not None and float(j["finished_at"]) > cutoff for j in jobs):
                return None
            # new deliveries come only from a job finishing, which the checks above catch
            active_deliveries = cur.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state IN (?, ?) AND series_uid = ?",
                (*_ACTIVE_DELIVERIES, uid),
            ).fetchone()[0]
            done_late = 0
            for chunk in _chunks(plan.delivery_ids):
                done_late += cur.execute(
                    f"SELECT COUNT(*) FROM deliveries WHERE id IN ({_marks(chunk)}) AND done_at > ?",
                    (*chunk, cutoff),
                ).fetchone()[0]
            row = {
                "state": series["state"],
                "rules": series["rules"],
                "last_received": series["last_received"],
                "quiet_seconds": series["quiet_seconds"],
                "active_jobs": sum(j["state"] in _ACTIVE_JOBS for j in jobs),
                "active_deliveries": active_deliveries,
            }
            if done_late or blockers(row, now):
                return None
            cur.execute("DELETE FROM instances WHERE series_uid = ?", (uid,))
            n_instances = cur.rowcount
            n_deliveries = 0
            for chunk in _chunks(plan.delivery_ids):
                cur.execute(f"DELETE FROM deliveries WHERE id IN ({_marks(chunk)})", chunk)
                n_deliveries += cur.rowcount
            cur.execute("DELETE FROM jobs WHERE series_uid = ?", (uid,))
            n_jobs = cur.rowcount
            cur.execute("DELETE FROM series WHERE series_uid = ?", (uid,))
            message = (
                f"series purged after the retention period: {n_instances} instance(s),"
                f" {n_jobs} job(s), {n_deliveries} delivery(ies)"
            )
            cur.execute(
                "INSERT INTO events (at, level, kind, series_uid, job_id, message)"
                " VALUES (?, 'info', 'retention_purged', ?, NULL, ?)",
                (now, uid, f"{message}; {note}" if note else message),
            )
        return PurgeCounts(instances=n_instances, jobs=n_jobs, deliveries=n_deliveries)
