"""Journal operations on deliveries: results and forwarded instances queued for a destination."""

from __future__ import annotations

import sqlite3

from dicom_node.storage.journal.base import JournalBase
from dicom_node.storage.journal.records import DeliveryRow, DeliverySpec, delivery_row
from dicom_node.storage.journal.states import DeliveryState


class DeliveryOps(JournalBase):
    """The delivery queue: claimed by the senders, retried with backoff, listed for the operator."""

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


def insert_delivery(cur: sqlite3.Cursor, job_id: int, series_uid: str, d: DeliverySpec, now: float) -> int:
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
