"""Journal operations for retention: which series are past the retention period, what a purge of
one removes, and the removal of its rows.

A series' last activity is the latest of its ``last_received``, the ``finished_at`` of its jobs and the
``done_at`` of its deliveries; it is *expired* when that lies at or before the cutoff. An expired series
is kept while its work is unfinished (:func:`blockers`). The caller holds the series' purge lock
(:class:`dicom_node.storage.series_locks.SeriesLocks`) from :meth:`RetentionOps.purge_plan` to
:meth:`RetentionOps.purge_series`, so no instance of it is filed in between.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_node.storage.journal.base import JournalBase
from dicom_node.storage.journal.states import (
    ACTIVE_DELIVERY_STATES,
    ACTIVE_JOB_STATES,
    SeriesState,
)


def _sql_in(states: tuple[str, ...]) -> str:
    return ", ".join(f"'{s}'" for s in states)  # enum values: fixed identifiers, never input


_EXPIRED_SQL = f"""
SELECT * FROM (
    SELECT s.series_uid, s.study_uid, s.state, s.generation,
        MAX(s.last_received,
            COALESCE((SELECT MAX(finished_at) FROM jobs j WHERE j.series_uid = s.series_uid), 0),
            COALESCE((SELECT MAX(done_at) FROM deliveries d WHERE d.series_uid = s.series_uid), 0)
        ) AS last_activity,
        (SELECT COUNT(*) FROM jobs j
            WHERE (j.series_uid = s.series_uid OR j.inputs LIKE '%"' || s.series_uid || '"%')
            AND j.state IN ({_sql_in(ACTIVE_JOB_STATES)})) AS active_jobs,
        (SELECT COUNT(*) FROM deliveries d WHERE d.series_uid = s.series_uid
            AND d.state IN ({_sql_in(ACTIVE_DELIVERY_STATES)})) AS active_deliveries
    FROM series s WHERE s.last_received <= :cutoff AND (:uid IS NULL OR s.series_uid = :uid)
) WHERE last_activity <= :cutoff ORDER BY last_activity, series_uid
"""


@dataclass(frozen=True)
class ExpiredSeries:
    """A series past the retention cutoff (:meth:`RetentionOps.expired_series`)."""

    series_uid: str
    study_uid: str
    state: SeriesState
    generation: int
    last_activity: float
    active_jobs: int  # pending or running
    active_deliveries: int  # pending or sending


@dataclass(frozen=True)
class PurgePlan:
    """What a purge of one series removes, as the journal saw it under the series' purge lock."""

    series_uid: str
    study_uid: str
    generation: int
    last_activity: float
    instance_paths: tuple[str, ...]  # relative to storage_dir, as recorded
    job_ids: tuple[int, ...]


@dataclass(frozen=True)
class PurgeCounts:
    instances: int
    jobs: int
    deliveries: int


def blockers(row: ExpiredSeries) -> list[str]:
    """Why an expired series may not be purged now (empty: it may)."""
    why: list[str] = []
    if row.active_jobs:
        why.append(f"{row.active_jobs} pending or running job(s)")
    if row.active_deliveries:
        why.append(f"{row.active_deliveries} pending or sending delivery(ies)")
    if row.state == SeriesState.RECEIVING:
        why.append("still receiving (its completion has not been decided)")
    return why


class RetentionOps(JournalBase):
    def expired_series(self, cutoff: float, series_uid: str | None = None) -> list[ExpiredSeries]:
        """Series whose last activity is at or before ``cutoff``, oldest first (only ``series_uid``
        when given)."""
        rows = self._query(_EXPIRED_SQL, {"cutoff": cutoff, "uid": series_uid})
        return [
            ExpiredSeries(
                series_uid=r["series_uid"],
                study_uid=r["study_uid"],
                state=SeriesState(r["state"]),
                generation=int(r["generation"]),
                last_activity=float(r["last_activity"]),
                active_jobs=int(r["active_jobs"]),
                active_deliveries=int(r["active_deliveries"]),
            )
            for r in rows
        ]

    def purge_plan(self, series_uid: str, cutoff: float) -> PurgePlan | None:
        """The files and rows a purge of ``series_uid`` removes, or None if the series is gone, no
        longer expired or has unfinished work."""
        found = self.expired_series(cutoff, series_uid)
        if not found or blockers(found[0]):
            return None
        paths = self._query("SELECT path FROM instances WHERE series_uid = ? ORDER BY path", (series_uid,))
        jobs = self._query("SELECT id FROM jobs WHERE series_uid = ? ORDER BY id", (series_uid,))
        return PurgePlan(
            series_uid=series_uid,
            study_uid=found[0].study_uid,
            generation=found[0].generation,
            last_activity=found[0].last_activity,
            instance_paths=tuple(str(r["path"]) for r in paths),
            job_ids=tuple(int(r["id"]) for r in jobs),
        )

    def purge_series(self, plan: PurgePlan, *, now: float, note: str = "") -> PurgeCounts | None:
        """Delete the series' rows (instances, deliveries, jobs, the series) and write a
        ``retention_purged`` event, in one transaction. Returns None and deletes nothing if the
        series changed since the plan (which the purge lock should make impossible)."""
        uid = plan.series_uid
        with self._tx() as cur:
            row = cur.execute("SELECT generation, state FROM series WHERE series_uid = ?", (uid,)).fetchone()
            jobs = [r[0] for r in cur.execute("SELECT id FROM jobs WHERE series_uid = ? ORDER BY id", (uid,))]
            if row is None or row["generation"] != plan.generation or tuple(jobs) != plan.job_ids:
                return None
            cur.execute("DELETE FROM instances WHERE series_uid = ?", (uid,))
            n_instances = cur.rowcount
            cur.execute("DELETE FROM deliveries WHERE series_uid = ?", (uid,))
            n_deliveries = cur.rowcount
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
