"""Operator actions on jobs and deliveries (trigger ``manual``)."""

from __future__ import annotations

import sqlite3

from dicom_node.storage.journal.base import JournalBase
from dicom_node.storage.journal.deliveries import insert_delivery
from dicom_node.storage.journal.jobs import insert_event, insert_job
from dicom_node.storage.journal.records import DeliverySpec, JobInput, JobRow, JobSpec, delivery_row, job_row
from dicom_node.storage.journal.states import ACTIVE_JOB_STATES, Trigger


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
            new_id = insert_delivery(cur, d.job_id, d.series_uid, spec, now)
            insert_event(
                cur,
                now,
                "manual",
                f"delivery {delivery_id} sent again as delivery {new_id} (trigger manual)",
                series_uid=d.series_uid,
                job_id=d.job_id,
            )
            return new_id


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
    new_id = insert_job(
        cur, job.series_uid, generations[job.series_uid], spec, Trigger.MANUAL, now, inputs=inputs
    )
    insert_event(
        cur,
        now,
        "manual",
        f"job {new_id} queued by hand (from job {job.id})",
        series_uid=job.series_uid,
        job_id=new_id,
    )
    return new_id
