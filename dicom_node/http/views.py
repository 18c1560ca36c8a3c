"""Journal rows as JSON-ready dicts for the HTTP API (one place, so every endpoint names a field the
same way). Enum states become their string values; times stay seconds since the epoch."""

from __future__ import annotations

from typing import Any

from dicom_node.storage.journal import DeliveryRow, EventRow, JobRow, SeriesRow
from dicom_node.storage.journal.operator import JobWithSeries

STAGE_ORDER = ("load", "inference", "postprocess", "seg_write", "job")


def stages(job: JobRow) -> list[dict[str, Any]]:
    timings = dict(job.timings)
    out = [{"stage": s, "seconds": timings[s]} for s in STAGE_ORDER if s in timings]
    return out + [{"stage": s, "seconds": v} for s, v in timings.items() if s not in STAGE_ORDER]


def job_view(item: JobWithSeries) -> dict[str, Any]:
    job, series = item.job, item.series
    return {
        "id": job.id,
        "series_uid": job.series_uid,
        "generation": job.generation,
        "rule": job.rule_name,
        "models": list(job.models),
        "destinations": list(job.destinations),
        "args": dict(job.args),
        "trigger": str(job.trigger),
        "state": str(job.state),
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration": None
        if job.started_at is None or job.finished_at is None
        else job.finished_at - job.started_at,
        "stages": stages(job),
        "error": job.error,
        "outputs": [
            {"name": o.path.rsplit("/", 1)[-1], "kind": o.kind, "sop_instance_uid": o.sop_instance_uid}
            for o in job.outputs
        ],
        "called_ae": series.called_ae if series else None,
        "calling_ae": series.calling_ae if series else None,
        "modality": series.modality if series else None,
        "series_description": series.series_description if series else None,
    }


def delivery_view(d: DeliveryRow) -> dict[str, Any]:
    return {
        "id": d.id,
        "job_id": d.job_id,
        "series_uid": d.series_uid,
        "destination": d.destination,
        "sop_instance_uid": d.sop_instance_uid,
        "sop_class_uid": d.sop_class_uid,
        "state": str(d.state),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "done_at": d.done_at,
    }


def series_view(s: SeriesRow) -> dict[str, Any]:
    return {
        "series_uid": s.series_uid,
        "study_uid": s.study_uid,
        "modality": s.modality,
        "series_description": s.series_description,
        "called_ae": s.called_ae,
        "calling_ae": s.calling_ae,
        "first_received": s.first_received,
        "last_received": s.last_received,
        "instance_count": s.instance_count,
        "expected_count": s.expected_count,
        "generation": s.generation,
        "state": str(s.state),
        "rules": None if s.rules is None else list(s.rules),
        "quiet_seconds": s.quiet_seconds,
        "routing_note": s.routing_note,
    }


def event_view(e: EventRow) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at,
        "level": e.level,
        "kind": e.kind,
        "series_uid": e.series_uid,
        "job_id": e.job_id,
        "message": e.message,
    }
