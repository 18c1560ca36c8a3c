"""What ``dicom-node status`` shows: a snapshot of the journal, as data and as text.

The snapshot is read through a read-only journal connection, so it works while the node runs (SQLite
WAL lets readers see the last committed state without blocking the writer).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dicom_node.storage.journal import (
    DeliveryRow,
    DeliveryState,
    EventRow,
    JobRow,
    JobState,
    JournalCounts,
    SeriesRow,
    SeriesState,
)
from dicom_node.textsafe import printable


class StatusJournal(Protocol):
    """What the status report reads of :class:`dicom_node.storage.journal.Journal`."""

    def counts(self) -> JournalCounts: ...
    def list_series(self, limit: int = ...) -> list[SeriesRow]: ...
    def list_jobs(self, limit: int = ..., state: JobState | None = ...) -> list[JobRow]: ...
    def list_deliveries(self, limit: int = ..., state: DeliveryState | None = ...) -> list[DeliveryRow]: ...
    def recent_events(self, limit: int = ..., level: str | None = ...) -> list[EventRow]: ...


SERIES_FIELDS = (
    "series_uid",
    "study_uid",
    "modality",
    "series_description",
    "called_ae",
    "calling_ae",
    "instance_count",
    "expected_count",
    "generation",
    "state",
    "rules",
    "routing_note",
    "last_received",
)
JOB_FIELDS = (
    "id",
    "series_uid",
    "generation",
    "rule_name",
    "models",
    "trigger",
    "state",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "timings",
    "error",
)
DELIVERY_FIELDS = (
    "id",
    "job_id",
    "series_uid",
    "destination",
    "sop_instance_uid",
    "state",
    "attempts",
    "next_attempt_at",
    "last_status",
    "last_error",
    "done_at",
)
EVENT_FIELDS = ("id", "at", "level", "kind", "series_uid", "job_id", "message")


@dataclass(frozen=True)
class Snapshot:
    """Counts per state plus the most recent rows of each table (events: warnings and errors)."""

    counts: JournalCounts
    series: list[SeriesRow]
    jobs: list[JobRow]
    deliveries: list[DeliveryRow]
    events: list[EventRow]


def snapshot(journal: StatusJournal, *, limit: int = 20) -> Snapshot:
    """Counts per state plus the most recent series, jobs, deliveries and warning/error events."""
    events = [e for e in journal.recent_events(limit=limit * 5) if e.level in ("warning", "error")][:limit]
    return Snapshot(
        counts=journal.counts(),
        series=journal.list_series(limit=limit),
        jobs=journal.list_jobs(limit=limit),
        deliveries=journal.list_deliveries(limit=limit),
        events=events,
    )


def _plain(value: Any) -> Any:
    """A JSON-ready value: mappings to dicts, tuples to lists (enums are strings already)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _pick(row: object, fields: Sequence[str]) -> dict[str, Any]:
    return {f: _plain(getattr(row, f)) for f in fields}


def as_document(snap: Snapshot) -> dict[str, Any]:
    """The snapshot as the JSON document ``dicom-node status --json`` prints."""
    counts = snap.counts
    return {
        "counts": {
            "series": _plain(counts.series),
            "jobs": _plain(counts.jobs),
            "deliveries": _plain(counts.deliveries),
            "instances": {"total": counts.instances},
        },
        "series": [_pick(s, SERIES_FIELDS) for s in snap.series],
        "jobs": [_pick(j, JOB_FIELDS) for j in snap.jobs],
        "deliveries": [_pick(d, DELIVERY_FIELDS) for d in snap.deliveries],
        "events": [_pick(e, EVENT_FIELDS) for e in snap.events],
    }


def to_json(snap: Snapshot) -> str:
    return json.dumps(as_document(snap), indent=2, sort_keys=False)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: Any, width: int) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= width else s[: width - 3] + "..."


def _table(title: str, header: Sequence[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [f"{title}: none", ""]
    # peers' text (descriptions, AE titles, error comments) cannot move the cursor or add lines
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        f"{title}:",
        ("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))).rstrip(),
    ]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return [*lines, ""]


def _timings(t: Mapping[str, float] | None) -> str:
    if not t:
        return "-"
    return " ".join(f"{k}={v:.1f}s" for k, v in t.items())


#: Series states whose routing note says why the series is not processed.
_NOTED_STATES = (SeriesState.ERROR, SeriesState.UNMATCHED)


def to_text(snap: Snapshot) -> str:
    """A human-readable report."""
    counts = snap.counts
    lines = [f"instances: {counts.instances}"]
    per_table: dict[str, Mapping[Any, int]] = {
        "series": counts.series,
        "jobs": counts.jobs,
        "deliveries": counts.deliveries,
    }
    for table, per_state in per_table.items():
        text = ", ".join(f"{k} {v}" for k, v in sorted(per_state.items())) or "none"
        lines.append(f"{table}: {text}")
    lines.append("")
    lines += _table(
        "recent series",
        ["series UID", "modality", "description", "instances", "state", "rules", "note"],
        [
            [
                s.series_uid,
                s.modality or "",
                _short(s.series_description, 30),
                f"{s.instance_count}" + (f"/{s.expected_count}" if s.expected_count else ""),
                s.state,
                ",".join(s.rules or ()) or "-",
                _short(s.routing_note, 100) if s.state in _NOTED_STATES else "",
            ]
            for s in snap.series
        ],
    )
    lines += _table(
        "jobs",
        ["id", "series UID", "rule", "trigger", "state", "attempts", "timings", "error"],
        [
            [
                str(j.id),
                j.series_uid,
                j.rule_name,
                j.trigger,
                j.state,
                str(j.attempts),
                _timings(j.timings),
                _short(j.error, 80) or "-",
            ]
            for j in snap.jobs
        ],
    )
    finished = (DeliveryState.DONE, DeliveryState.FAILED)
    lines += _table(
        "deliveries",
        ["id", "job", "destination", "state", "attempts", "status", "next/done", "last error"],
        [
            [
                str(d.id),
                str(d.job_id),
                d.destination,
                d.state,
                str(d.attempts),
                "-" if d.last_status is None else f"0x{d.last_status:04X}",
                _when(d.done_at if d.state in finished else d.next_attempt_at),
                _short(d.last_error, 80) or "-",
            ]
            for d in snap.deliveries
        ],
    )
    lines += _table(
        "last warnings and errors",
        ["when", "level", "kind", "message"],
        [[_when(e.at), e.level, e.kind, _short(e.message, 120)] for e in snap.events],
    )
    return "\n".join(lines).rstrip() + "\n"
