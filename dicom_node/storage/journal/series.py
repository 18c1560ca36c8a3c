"""Journal operations on instances and series: recording, routing decisions, completion timers."""

from __future__ import annotations

import json
from collections.abc import Sequence

from dicom_node.storage.journal.base import JournalBase
from dicom_node.storage.journal.records import (
    DueSeries,
    InstanceRecord,
    InstanceRow,
    RecordOutcome,
    SeriesRow,
    instance_row,
    series_row,
)
from dicom_node.storage.journal.states import SeriesState, Trigger


class SeriesOps(JournalBase):
    def record_instance(self, rec: InstanceRecord) -> RecordOutcome:
        """Record a filed instance and update its series, in one transaction.

        A known SOP Instance UID replaces the earlier record (no duplicate slices). A new or changed
        instance bumps the series generation and puts the series back to ``receiving``, which
        restarts its completion timer; if a job already ran for the series this is a late arrival.
        An unchanged re-send (same SOP instance in the same series, same data set hash) also puts
        the series back to ``receiving`` (a completed series then re-delivers its result) but keeps
        its generation: nothing new to infer.
        """
        with self._tx() as cur:
            old = cur.execute(
                "SELECT path, series_uid, digest FROM instances WHERE sop_instance_uid = ?",
                (rec.sop_instance_uid,),
            ).fetchone()
            unchanged = (
                old is not None
                and old["series_uid"] == rec.series_uid
                and rec.digest is not None
                and old["digest"] == rec.digest
            )
            cur.execute(
                "INSERT OR REPLACE INTO instances (sop_instance_uid, sop_class_uid, series_uid,"
                " study_uid, transfer_syntax, path, size, called_ae, calling_ae, association_id,"
                " received_at, acquisition, images_in_acquisition, digest)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.sop_instance_uid,
                    rec.sop_class_uid,
                    rec.series_uid,
                    rec.study_uid,
                    rec.transfer_syntax,
                    rec.path,
                    rec.size,
                    rec.called_ae,
                    rec.calling_ae,
                    rec.association_id,
                    rec.received_at,
                    rec.acquisition,
                    rec.expected_count,
                    rec.digest,
                ),
            )
            series = cur.execute(
                "SELECT state, generation FROM series WHERE series_uid = ?", (rec.series_uid,)
            ).fetchone()
            had_job = False
            if series is None:
                cur.execute(
                    "INSERT INTO series (series_uid, study_uid, modality, series_description,"
                    " called_ae, calling_ae, first_received, last_received, instance_count,"
                    " expected_count, generation, state, last_association_id)"
                    " VALUES (?,?,?,?,?,?,?,?,1,?,1,?,?)",
                    (
                        rec.series_uid,
                        rec.study_uid,
                        rec.modality,
                        rec.series_description,
                        rec.called_ae,
                        rec.calling_ae,
                        rec.received_at,
                        rec.received_at,
                        rec.expected_count,
                        SeriesState.RECEIVING,
                        rec.association_id,
                    ),
                )
            else:
                had_job = (
                    cur.execute(
                        "SELECT 1 FROM jobs WHERE series_uid = ? LIMIT 1", (rec.series_uid,)
                    ).fetchone()
                    is not None
                )
                # a new SOP instance (or one moved here from another series) adds one
                added = int(old is None or old["series_uid"] != rec.series_uid)
                # an unmatched or failed series is routed again (rules may have changed since)
                cur.execute(
                    "UPDATE series SET last_received = MAX(last_received, ?),"
                    " instance_count = instance_count + ?,"
                    " expected_count = COALESCE(?, expected_count), generation = generation + ?,"
                    " state = ?, released = 0, last_association_id = ?,"
                    " rules = CASE WHEN state IN (?, ?) THEN NULL ELSE rules END"
                    " WHERE series_uid = ?",
                    (
                        rec.received_at,
                        added,
                        rec.expected_count,
                        0 if unchanged else 1,
                        SeriesState.RECEIVING,
                        rec.association_id,
                        SeriesState.UNMATCHED,
                        SeriesState.ERROR,
                        rec.series_uid,
                    ),
                )
            if old is not None and old["series_uid"] != rec.series_uid:
                # the instance moved series: recount the old one
                cur.execute(
                    "UPDATE series SET instance_count = instance_count - 1 WHERE series_uid = ?",
                    (old["series_uid"],),
                )
        old_path = old["path"] if old is not None and old["path"] != rec.path else None
        return RecordOutcome(replaced=old is not None, old_path=old_path, late=had_job, unchanged=unchanged)

    def bytes_from(self, calling_ae: str) -> int:
        """Spool bytes of the kept instances a calling AE sent (for its disk quota)."""
        rows = self._query(
            "SELECT COALESCE(SUM(size), 0) AS n FROM instances WHERE calling_ae = ?", (calling_ae,)
        )
        return int(rows[0]["n"])

    def known_paths(self) -> set[str]:
        """Relative paths of every recorded instance (for the start-up spool reconciliation)."""
        return {r["path"] for r in self._query("SELECT path FROM instances")}

    def instances_of_series(self, series_uid: str) -> list[InstanceRow]:
        rows = self._query(
            "SELECT * FROM instances WHERE series_uid = ? ORDER BY received_at, sop_instance_uid",
            (series_uid,),
        )
        return [instance_row(r) for r in rows]

    def get_series(self, series_uid: str) -> SeriesRow | None:
        rows = self._query("SELECT * FROM series WHERE series_uid = ?", (series_uid,))
        return series_row(rows[0]) if rows else None

    def series_of_study(self, study_uid: str) -> list[SeriesRow]:
        """Every series of a study, first received first."""
        rows = self._query(
            "SELECT * FROM series WHERE study_uid = ? ORDER BY first_received, series_uid", (study_uid,)
        )
        return [series_row(r) for r in rows]

    def list_series(self, limit: int = 100) -> list[SeriesRow]:
        rows = self._query("SELECT * FROM series ORDER BY last_received DESC LIMIT ?", (limit,))
        return [series_row(r) for r in rows]

    def unrouted_series(self) -> list[SeriesRow]:
        """Series receiving instances that have no rule decision yet."""
        rows = self._query(
            "SELECT * FROM series WHERE state = ? AND rules IS NULL ORDER BY first_received",
            (SeriesState.RECEIVING,),
        )
        return [series_row(r) for r in rows]

    def receiving_routed_series(self) -> list[SeriesRow]:
        """Series receiving instances that have a rule decision."""
        rows = self._query(
            "SELECT * FROM series WHERE state = ? AND rules IS NOT NULL", (SeriesState.RECEIVING,)
        )
        return [series_row(r) for r in rows]

    def set_routing(
        self,
        series_uid: str,
        *,
        rules: Sequence[str],
        quiet_seconds: float = 0.0,
        complete_on_release: bool = False,
        use_expected_count: bool = True,
        complete_study: bool = False,
        note: str = "",
    ) -> None:
        """Store a routing decision: the names of the matched rules (in order). No rule marks the
        series ``unmatched`` (kept for the retention period, never sent)."""
        with self._tx() as cur:
            if not rules:
                cur.execute(
                    "UPDATE series SET state = ?, rules = NULL, routing_note = ?"
                    " WHERE series_uid = ? AND state = ?",
                    (SeriesState.UNMATCHED, note, series_uid, SeriesState.RECEIVING),
                )
            else:
                cur.execute(
                    "UPDATE series SET rules = ?, quiet_seconds = ?, complete_on_release = ?,"
                    " use_expected_count = ?, complete_study = ?, routing_note = ? WHERE series_uid = ?",
                    (
                        json.dumps(list(rules)),
                        quiet_seconds,
                        int(complete_on_release),
                        int(use_expected_count),
                        int(complete_study),
                        note,
                        series_uid,
                    ),
                )

    def fail_series(self, series_uid: str, *, reason: str) -> bool:
        """Mark a receiving series ``error`` with the reason (its routing note), so routing and
        completion pass it by; a new instance of the series puts it back to ``receiving``.
        Returns whether the series was receiving."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE series SET state = ?, routing_note = ? WHERE series_uid = ? AND state = ?",
                (SeriesState.ERROR, reason, series_uid, SeriesState.RECEIVING),
            )
            return cur.rowcount > 0

    def clear_routing_of_receiving(self) -> int:
        """Forget the rules of series still receiving (after a rules reload), so they are routed
        again. Returns how many."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE series SET rules = NULL WHERE state = ? AND rules IS NOT NULL",
                (SeriesState.RECEIVING,),
            )
            return cur.rowcount

    def mark_association_released(self, association_id: str) -> int:
        """Note that an association ended; series it delivered last may complete on release."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE series SET released = 1 WHERE last_association_id = ? AND state = ?",
                (association_id, SeriesState.RECEIVING),
            )
            return cur.rowcount

    def due_series(self, now: float) -> list[DueSeries]:
        """Routed series whose completion condition holds at ``now``, each with its trigger:

        - ``study_quiet``: the series waits for its study (a ``complete: study`` rule) and no series
          of the study received anything for the quiet seconds;
        - ``expected_count``: first completion only, every acquisition seen in the series holds the
          ImagesInAcquisition it announces (a hint: a series may hold several acquisitions);
        - ``association_released`` (rule option): first completion only;
        - ``quiet_period``: no new instance for the rule's quiet seconds. After a series completed,
          late or re-sent instances complete it only this way: a burst gives one re-run.
        """
        rows = self._query(
            "SELECT * FROM series WHERE state = ? AND rules IS NOT NULL", (SeriesState.RECEIVING,)
        )
        due = []
        for series in map(series_row, rows):
            quiet = series.quiet_seconds or 0.0
            first = not series.completions
            if series.complete_study:
                if self._study_last_received(series.study_uid) + quiet > now:
                    continue
                trigger = Trigger.STUDY_QUIET
            elif first and series.use_expected_count and self._acquisitions_complete(series.series_uid):
                trigger = Trigger.EXPECTED_COUNT
            elif first and series.complete_on_release and series.released:
                trigger = Trigger.ASSOCIATION_RELEASED
            elif series.last_received + quiet <= now:
                trigger = Trigger.QUIET_PERIOD
            else:
                continue
            due.append(DueSeries(series, trigger))
        return due

    def _acquisitions_complete(self, series_uid: str) -> bool:
        """Every acquisition seen in the series (by AcquisitionNumber) announces its size and has at
        least that many instances."""
        rows = self._query(
            "SELECT COUNT(*) AS n, MAX(images_in_acquisition) AS announced FROM instances"
            " WHERE series_uid = ? GROUP BY acquisition",
            (series_uid,),
        )
        return bool(rows) and all(r["announced"] is not None and r["n"] >= r["announced"] for r in rows)

    def _study_last_received(self, study_uid: str) -> float:
        rows = self._query("SELECT MAX(last_received) AS t FROM series WHERE study_uid = ?", (study_uid,))
        return float(rows[0]["t"] or 0.0)

    def next_due_time(self) -> float | None:
        """The earliest time a routed, receiving series can complete by its quiet period (for a
        series waiting for its study, by the study's)."""
        rows = self._query(
            "SELECT MIN(CASE WHEN s.complete_study THEN"
            " (SELECT MAX(o.last_received) FROM series o WHERE o.study_uid = s.study_uid)"
            " ELSE s.last_received END + COALESCE(s.quiet_seconds, 0)) AS t FROM series s"
            " WHERE s.state = ? AND s.rules IS NOT NULL",
            (SeriesState.RECEIVING,),
        )
        value = rows[0]["t"] if rows else None
        return None if value is None else float(value)
