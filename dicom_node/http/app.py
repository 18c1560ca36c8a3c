"""The FastAPI application of a node: routers per concern, a request size limit on uploads, one log
line per request that changes something (GETs at DEBUG: the dashboard polls)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicom_node.http import routes_dashboard, routes_infer, routes_metrics, routes_models, routes_node
from dicom_node.http.context import HttpContext

logger = logging.getLogger(__name__)

MB = 1024 * 1024
#: Endpoints that take an upload; every other request body is limited to SMALL_BODY bytes.
UPLOAD_PATHS = frozenset({"/infer_file"})
SMALL_BODY = 1 * MB


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over the limit with 413, by the declared Content-Length before reading
    and by the bytes actually received while reading (chunked uploads declare nothing)."""

    def __init__(self, app: ASGIApp, *, upload_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"] in UPLOAD_PATHS else SMALL_BODY
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, limit)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"the request body is larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status: dict[str, Any] = {"code": 500}

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            level = (
                logging.DEBUG if scope["method"] in ("GET", "HEAD") and status["code"] < 400 else logging.INFO
            )
            client = scope.get("client") or ("?", 0)
            logger.log(
                level,
                "http %s %s -> %d in %.0f ms (from %s)",
                scope["method"],
                scope["path"],
                status["code"],
                (time.monotonic() - started) * 1000.0,
                client[0],
            )


def create_app(context: HttpContext) -> FastAPI:
    app = FastAPI(
        title="nnU-Net DICOM node",
        description="nnunet_serve's API, node operations, dashboard and metrics",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.context = context
    for module in (routes_models, routes_node, routes_infer, routes_metrics, routes_dashboard):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, upload_limit=context.settings.max_upload_mb * MB)
    app.add_middleware(RequestLog)
    return app
