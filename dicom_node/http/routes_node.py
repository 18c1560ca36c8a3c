"""Node endpoints for operators: jobs, series, and the operator actions (retry, resend, rerun, rules
reload). The actions call :mod:`dicom_node.ops.actions`, the code behind the CLI's commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from dicom_node.errors import ConfigError
from dicom_node.http.auth import require_token
from dicom_node.http.context import HttpContext, context_of
from dicom_node.http.views import delivery_view, event_view, job_view, series_view
from dicom_node.ops import actions
from dicom_node.ops.actions import ActionResult
from dicom_node.storage.journal import JobState

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


def _retry(ctx: HttpContext, job_id: int) -> ActionResult:
    journal = ctx.journal()
    if journal.get_job(job_id) is None:
        raise HTTPException(404, f"job {job_id} is not in the journal")
    return actions.retry_job(journal, job_id, clock=ctx.clock)


def _resend(ctx: HttpContext, delivery_id: int) -> ActionResult:
    journal = ctx.journal()
    if journal.get_delivery(delivery_id) is None:
        raise HTTPException(404, f"delivery {delivery_id} is not in the journal")
    return actions.resend_delivery(journal, delivery_id, clock=ctx.clock)


def _rerun(ctx: HttpContext, series_uid: str, rule: str | None) -> ActionResult:
    journal = ctx.journal()
    if journal.get_series(series_uid) is None:
        raise HTTPException(404, f"series {series_uid} is not in the journal")
    return actions.rerun_series(journal, series_uid, rule=rule, clock=ctx.clock)


async def _act(ctx: HttpContext, action: Callable[..., ActionResult], *args: Any) -> dict[str, Any]:
    """Run an operator action; 409 with its message when it cannot be done; wake whoever has work."""
    try:
        result = await asyncio.to_thread(action, ctx, *args)
    except actions.ActionError as exc:
        raise HTTPException(409, str(exc)) from exc
    if result.jobs:
        ctx.node.wake_workers()
    if result.deliveries:
        ctx.node.wake_sender()
    logger.info("operator action over HTTP: %s", result.message)
    return {
        "status": "ok",
        "jobs": list(result.jobs),
        "deliveries": list(result.deliveries),
        "message": result.message,
    }


@router.post("/jobs/{job_id}/retry", dependencies=[Depends(require_token)])
async def retry_job(request: Request, job_id: int) -> dict[str, Any]:
    """Run a job again as a new job on the series' current instances (as ``dicom-node retry JOB_ID``);
    409 while it is pending or running."""
    return await _act(context_of(request), _retry, job_id)


@router.post("/deliveries/{delivery_id}/resend", dependencies=[Depends(require_token)])
async def resend_delivery(request: Request, delivery_id: int) -> dict[str, Any]:
    """Send a delivery's file again, as a new delivery (as ``dicom-node resend DELIVERY_ID``)."""
    return await _act(context_of(request), _resend, delivery_id)


@router.post("/series/{series_uid}/rerun", dependencies=[Depends(require_token)])
async def rerun_series(request: Request, series_uid: str, rule: str | None = None) -> dict[str, Any]:
    """New jobs for the series, one per rule that ran on it, as its latest job did (as ``dicom-node
    rerun SERIES_UID [--rule NAME]``); 409 when no job ever ran on it."""
    return await _act(context_of(request), _rerun, series_uid, rule)


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
