"""What the dashboard shows, as one JSON document (``GET /dashboard/state``), built from the journal
and the running SCP: open associations, series waiting for completion (with the time left), the job
queue, recent results, failures (jobs and deliveries) with their reasons, deliveries per destination
and recent warnings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dicom_node.storage.journal import DeliveryState, JobState
from dicom_node.storage.journal.operator import JobWithSeries

if TYPE_CHECKING:
    from dicom_node.http.context import HttpContext

RESULT_LIMIT = 10


def _associations(ctx: HttpContext) -> list[dict[str, Any]]:
    server = ctx.node.server
    if server is None:
        return []
    out = []
    for assoc in server.active_associations():
        requestor = getattr(assoc, "requestor", None)
        acceptor = getattr(assoc, "acceptor", None)
        out.append(
            {
                "calling_ae": str(getattr(requestor, "ae_title", "") or "").strip(),
                "called_ae": str(getattr(acceptor, "ae_title", "") or "").strip(),
                "peer": f"{getattr(requestor, 'address', '?')}:{getattr(requestor, 'port', '?')}",
            }
        )
    return out


def _waiting(ctx: HttpContext, now: float) -> list[dict[str, Any]]:
    out = []
    for s in ctx.journal().waiting_series():
        left = None
        if s.rules is not None and s.quiet_seconds is not None:
            left = max(0.0, s.last_received + s.quiet_seconds - now)
        out.append(
            {
                "series_uid": s.series_uid,
                "modality": s.modality,
                "series_description": s.series_description,
                "calling_ae": s.calling_ae,
                "called_ae": s.called_ae,
                "instances": s.instance_count,
                "expected": s.expected_count,
                "rules": None if s.rules is None else list(s.rules),
                "seconds_left": left,
            }
        )
    return out


def _job_row(item: JobWithSeries, now: float) -> dict[str, Any]:
    job, series = item.job, item.series
    return {
        "id": job.id,
        "series_uid": job.series_uid,
        "series_description": series.series_description if series else None,
        "calling_ae": series.calling_ae if series else None,
        "rule": job.rule_name,
        "models": list(job.models),
        "trigger": str(job.trigger),
        "state": str(job.state),
        "attempts": job.attempts,
        "error": job.error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "waiting_seconds": now - job.created_at if job.state == JobState.PENDING else None,
        "seconds": job.timings.get("job"),
        "has_seg": any(o.kind == "seg" for o in job.outputs),
    }


def build_state(ctx: HttpContext) -> dict[str, Any]:
    journal = ctx.journal()
    now = ctx.clock()
    node = ctx.node
    queue = journal.find_jobs(states=[JobState.PENDING, JobState.RUNNING], limit=100)
    results = journal.find_jobs(states=[JobState.DONE, JobState.EMPTY], limit=RESULT_LIMIT)
    failed_jobs = journal.find_jobs(states=[JobState.FAILED], limit=20)
    failed_deliveries = journal.list_deliveries(limit=20, state=DeliveryState.FAILED)
    events = [e for e in journal.recent_events(limit=100) if e.level in ("warning", "error")][:15]
    per_destination = journal.deliveries_by_destination()
    return {
        "node": {
            "ae_title": node.ae_title,
            "address": node.address if node.server is not None else None,
            "storage_dir": str(node.storage_dir),
            "device": ctx.devices,
            "now": now,
        },
        "counts": _counts(journal.counts()),
        "associations": _associations(ctx),
        "waiting": _waiting(ctx, now),
        "queue": [_job_row(j, now) for j in reversed(queue)],
        "results": [_job_row(j, now) for j in results],
        "failures": {
            "jobs": [_job_row(j, now) for j in failed_jobs],
            "deliveries": [
                {
                    "id": d.id,
                    "job_id": d.job_id,
                    "destination": d.destination,
                    "sop_instance_uid": d.sop_instance_uid,
                    "attempts": d.attempts,
                    "error": d.last_error,
                }
                for d in failed_deliveries
            ],
        },
        "destinations": {
            name: {str(state): n for state, n in per_destination.get(name, {}).items()}
            for name in [
                *ctx.config.destinations,
                *(d for d in per_destination if d not in ctx.config.destinations),
            ]
        },
        "events": [{"at": e.at, "level": e.level, "kind": e.kind, "message": e.message} for e in events],
        "token_required": ctx.settings.token is not None,
    }


def _counts(counts: Any) -> dict[str, Any]:
    return {
        "series": {str(k): v for k, v in counts.series.items()},
        "jobs": {str(k): v for k, v in counts.jobs.items()},
        "deliveries": {str(k): v for k, v in counts.deliveries.items()},
        "instances": counts.instances,
    }
