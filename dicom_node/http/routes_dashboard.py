"""The dashboard at ``/``: a page the server renders complete (it reads without JavaScript), then
``static/dashboard.js`` redraws its sections from ``GET /dashboard/state`` every two seconds. Plus the
result previews (``GET /jobs/{id}/preview.png``). Everything is served by the node: no CDN."""

from __future__ import annotations

import asyncio
import html
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from dicom_node.http.context import HttpContext, context_of
from dicom_node.http.dashboard_state import build_state
from dicom_node.http.preview import cached_preview

router = APIRouter()

STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _secs(value: Any) -> str:
    return "" if value is None else f"{float(value):.1f} s"


def render_sections(state: dict[str, Any]) -> dict[str, str]:
    """The first rendering of each section (the script redraws the same ids)."""
    results = "".join(
        f'<figure class="result" data-job="{_e(j["id"])}">'
        + (
            f'<img src="/jobs/{_e(j["id"])}/preview.png" alt="SEG outlines of job {_e(j["id"])}">'
            if j["has_seg"]
            else f'<div class="noseg">no SEG ({_e(j["state"])})</div>'
        )
        + f"<figcaption>Job {_e(j['id'])} · {_e(j['state'])} · {_e(' + '.join(j['models']))}"
        f" · {_secs(j['seconds'])}<br>{_e(j['series_description'] or j['series_uid'])}"
        f" · {_e(j['trigger'])}</figcaption></figure>"
        for j in state["results"]
    )
    failures = [
        [
            f"Job {_e(j['id'])} ({_e(j['rule'])})",
            f'<span class="error">{_e(j["error"])}</span>',
            _e(j["attempts"]),
            f'<button class="retry" data-action="/jobs/{_e(j["id"])}/retry">Retry</button>',
        ]
        for j in state["failures"]["jobs"]
    ] + [
        [
            f"Delivery {_e(d['id'])} to {_e(d['destination'])}",
            f'<span class="error">{_e(d["error"])}</span>',
            _e(d["attempts"]),
            f'<button class="resend" data-action="/deliveries/{_e(d["id"])}/resend">Resend</button>',
        ]
        for d in state["failures"]["deliveries"]
    ]
    return {
        "associations": _table(
            ["Calling AE", "Called AE", "Peer"],
            [[_e(a["calling_ae"]), _e(a["called_ae"]), _e(a["peer"])] for a in state["associations"]],
            "No open association.",
        ),
        "waiting": _table(
            ["Series", "Modality", "From", "Instances", "Rules", "Time left"],
            [
                [
                    _e(w["series_description"] or w["series_uid"]),
                    _e(w["modality"]),
                    _e(w["calling_ae"]),
                    _e(w["instances"]) + (f" / {_e(w['expected'])}" if w["expected"] else ""),
                    _e("routing..." if w["rules"] is None else ", ".join(w["rules"])),
                    _secs(w["seconds_left"]),
                ]
                for w in state["waiting"]
            ],
            "No series waiting for completion.",
        ),
        "queue": _table(
            ["Job", "State", "Series", "Rule", "Models", "Trigger", "Waiting"],
            [
                [
                    _e(j["id"]),
                    _e(j["state"]),
                    _e(j["series_description"] or j["series_uid"]),
                    _e(j["rule"]),
                    _e(" + ".join(j["models"])),
                    _e(j["trigger"]),
                    _secs(j["waiting_seconds"]),
                ]
                for j in state["queue"]
            ],
            "The job queue is empty.",
        ),
        "results": f'<div class="cards">{results or "<p class=empty>No results yet.</p>"}</div>',
        "failures": _table(["What", "Reason", "Attempts", ""], failures, "No failures."),
        "destinations": _table(
            ["Destination", "Pending", "Sending", "Done", "Failed"],
            [
                [_e(name)] + [_e(c.get(k, 0)) for k in ("pending", "sending", "done", "failed")]
                for name, c in state["destinations"].items()
            ],
            "No destination configured.",
        ),
        "events": _table(
            ["Level", "Kind", "Message"],
            [[_e(e["level"]), _e(e["kind"]), _e(e["message"])] for e in state["events"]],
            "No warnings.",
        ),
    }


TITLES = {
    "associations": "Associations",
    "waiting": "Series waiting for completion",
    "queue": "Job queue",
    "failures": "Failures",
    "results": "Recent results",
    "destinations": "Deliveries per destination",
    "events": "Recent warnings",
}
WIDE = {"results", "events"}


def render_page(state: dict[str, Any]) -> str:
    node = state["node"]
    sections = render_sections(state)
    body = "".join(
        f'<section class="{"wide" if name in WIDE else ""}"><h2>{_e(title)}</h2>'
        f'<div id="{name}">{sections[name]}</div></section>'
        for name, title in TITLES.items()
    )
    token = (
        '<label>Token <input id="token" type="password" autocomplete="off"></label>'
        if state["token_required"]
        else ""
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(node['ae_title'])} · nnU-Net DICOM node</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/dashboard.css"></head><body>'
        f"<header><h1>{_e(node['ae_title'])}</h1>"
        f'<span class="meta">{_e(node["address"])} · device {_e(node["device"])}</span>'
        f'{token}<span id="status"></span><span id="action"></span></header>'
        f"<main>{body}</main>"
        '<script src="/static/dashboard.js"></script></body></html>'
    )


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    state = await asyncio.to_thread(build_state, context_of(request))
    return HTMLResponse(render_page(state))


@router.get("/dashboard/state")
async def dashboard_state(request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(build_state, context_of(request))


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    text = resources.files("dicom_node.http").joinpath("static", name).read_text(encoding="utf-8")
    return Response(text, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


def _preview(ctx: HttpContext, job_id: int) -> bytes:
    journal = ctx.journal()
    job = journal.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} is unknown or expired")
    segs = [ctx.storage_dir / o.path for o in job.outputs if o.kind == "seg"]
    segs = [p for p in segs if p.is_file()]
    if not segs:
        raise HTTPException(404, f"job {job_id} has no SEG to preview")
    sources = [ctx.storage_dir / r.path for r in journal.instances_of_series(job.series_uid)]
    if not sources:
        raise HTTPException(404, f"the series of job {job_id} is no longer stored")
    try:
        return cached_preview(Path(segs[0]).parent, sources, segs[0])
    except Exception as exc:  # a picture that cannot be drawn is a 404 for the dashboard, not a 500
        raise HTTPException(404, f"no preview for job {job_id}: {exc}") from exc


@router.get("/jobs/{job_id}/preview.png")
async def preview(request: Request, job_id: int) -> Response:
    """The SEG's outlines over the middle slice of its CT (PNG, cached)."""
    body = await asyncio.to_thread(_preview, context_of(request), job_id)
    return Response(body, media_type="image/png", headers={"Cache-Control": "max-age=3600"})
