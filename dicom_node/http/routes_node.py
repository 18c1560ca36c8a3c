"""Node endpoints for operators: jobs, series, and the operator actions (retry, resend, rerun, rules
reload). The actions call :mod:`dicom_node.ops.actions`, the code behind the CLI's commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from dicom_node.errors import ConfigError
from dicom_node.http.auth import require_token
from dicom_node.http.context import HttpContext, context_of
from dicom_node.http.views import delivery_view, event_view, job_view, series_view
from dicom_node.ops import actions
from dicom_node.storage.journal import ActionOutcome, JobState

logger = logging.getLogger(__name__)

router = APIRouter()

JOB_STATES = {s.value: s for s in JobState}


def parse_time(value: str | None, name: str) -> float | None:
    """Seconds since the epoch, or an ISO 8601 date/time (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name}: not a time (epoch seconds or ISO 8601): {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _answer(outcome: ActionOutcome, what: str) -> dict[str, Any]:
    if outcome.missing:
        raise HTTPException(404, outcome.reason)
    if not outcome.ok:
        raise HTTPException(409, outcome.reason)
    return {"status": "ok", what: list(outcome.ids)}


@router.get("/jobs")
async def list_jobs(
    request: Request,
    state: Annotated[list[str] | None, Query(description="job state(s)")] = None,
    rule: str | None = None,
    ae: Annotated[str | None, Query(description="the series' called or calling AE title")] = None,
    since: Annotated[str | None, Query(description="created at or after (epoch s or ISO 8601)")] = None,
    until: Annotated[str | None, Query(description="created at or before")] = None,
    series_uid: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    states = list(state or [])
    unknown = [s for s in states if s not in JOB_STATES]
    if unknown:
        raise HTTPException(
            422, f"state: unknown job state(s) {', '.join(unknown)}; known: {', '.join(sorted(JOB_STATES))}"
        )
    ctx = context_of(request)
    rows = await asyncio.to_thread(
        ctx.journal().find_jobs,
        states=[JOB_STATES[s] for s in states],
        rule=rule,
        ae=ae,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        series_uid=series_uid,
        limit=limit,
    )
    return {"jobs": [job_view(j) for j in rows]}


def _job_details(ctx: HttpContext, job_id: int) -> dict[str, Any]:
    journal = ctx.journal()
    job = journal.job_with_series(job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} is not in the journal")
    view = job_view(job)
    view["deliveries"] = [delivery_view(d) for d in journal.deliveries_of_job(job_id)]
    view["events"] = [event_view(e) for e in journal.events_of(job_id=job_id)]
    return view


@router.get("/jobs/{job_id}")
async def get_job(request: Request, job_id: int) -> dict[str, Any]:
    """A job: its stages and timings, why it fired (trigger, rule), its error, outputs and deliveries."""
    return await asyncio.to_thread(_job_details, context_of(request), job_id)


def _series_details(ctx: HttpContext, series_uid: str) -> dict[str, Any]:
    journal = ctx.journal()
    series = journal.get_series(series_uid)
    if series is None:
        raise HTTPException(404, f"series {series_uid} is not in the journal")
    return {
        "series": series_view(series),
        "jobs": [job_view(j) for j in journal.find_jobs(series_uid=series_uid, limit=1000)],
        "deliveries": [delivery_view(d) for d in journal.deliveries_of_series(series_uid)],
        "events": [event_view(e) for e in journal.events_of(series_uid=series_uid)],
    }


@router.get("/series/{series_uid}")
async def get_series(request: Request, series_uid: str) -> dict[str, Any]:
    return await asyncio.to_thread(_series_details, context_of(request), series_uid)


@router.post("/jobs/{job_id}/retry", dependencies=[Depends(require_token)])
async def retry_job(request: Request, job_id: int) -> dict[str, Any]:
    """Run a finished job again (as ``dicom-node retry JOB_ID``)."""
    ctx = context_of(request)
    outcome = await asyncio.to_thread(
        actions.retry_job, ctx.journal(), job_id, now=ctx.clock(), wake=ctx.node.wake_workers
    )
    return _answer(outcome, "jobs")


@router.post("/deliveries/{delivery_id}/resend", dependencies=[Depends(require_token)])
async def resend_delivery(request: Request, delivery_id: int) -> dict[str, Any]:
    """Send a delivery again (as ``dicom-node resend DELIVERY_ID``)."""
    ctx = context_of(request)
    outcome = await asyncio.to_thread(
        actions.resend_delivery, ctx.journal(), delivery_id, now=ctx.clock(), wake=ctx.node.wake_sender
    )
    return _answer(outcome, "deliveries")


@router.post("/series/{series_uid}/rerun", dependencies=[Depends(require_token)])
async def rerun_series(request: Request, series_uid: str) -> dict[str, Any]:
    """New jobs for the series by the rules it matched (as ``dicom-node rerun SERIES_UID``)."""
    ctx = context_of(request)
    outcome = await asyncio.to_thread(
        actions.rerun_series,
        ctx.journal(),
        series_uid,
        ctx.node.rules,
        now=ctx.clock(),
        wake=ctx.node.wake_workers,
    )
    return _answer(outcome, "jobs")


@router.post("/rules/reload", dependencies=[Depends(require_token)])
async def reload_rules(request: Request) -> dict[str, Any]:
    """Read the rules from their file again; 422 with the problems if they do not load (the rules in
    effect stay)."""
    ctx = context_of(request)
    try:
        rules = await asyncio.to_thread(ctx.node.reload_rules)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    return {"status": "ok", "rules": list(rules.names)}


@router.get("/rules")
async def list_rules(request: Request) -> dict[str, Any]:
    rules = context_of(request).node.rules
    return {"rules": [r.model_dump(by_alias=True, mode="json") for r in rules]}
