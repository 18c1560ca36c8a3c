"""``GET /metrics``: the node's Prometheus registry (see :mod:`dicom_node.http.metrics`)."""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from dicom_node.http import health
from dicom_node.http.context import context_of

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    ctx = context_of(request)
    gpu = partial(health.devices_memory, ctx.executors)
    body = await asyncio.to_thread(ctx.metrics.render, ctx.node.journal, gpu)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
