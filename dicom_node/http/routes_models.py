"""nnunet_serve's service endpoints: ``/healthz``, ``/readyz``, ``/model_info``, ``/model_info_clean``,
``/request-params`` and ``/expire``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from dicom_node.http import health
from dicom_node.http.auth import require_token
from dicom_node.http.context import HttpContext, context_of
from dicom_node.http.requests import InferRequest
from inference.api import Executor

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and answering."""
    return {"status": "ok"}


def _readiness(ctx: HttpContext) -> dict[str, Any]:
    node = ctx.node
    server = node.server
    checks = {
        "journal": health.journal_check(node.journal),
        "dicom": health.scp_check(server),
        "models": health.models_check(ctx.catalog),
        "device": health.devices_check(ctx.executors),
    }
    memory = health.devices_memory(ctx.executors)
    free_values = [free for _, free, _ in memory if free is not None]
    failing = [name for name, check in checks.items() if not check.ok]
    return {
        "status": "ok" if not failing else "failing",
        "failing": failing,
        "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
        # nnunet_serve's fields
        "models_loaded": ctx.catalog is not None and checks["models"].ok,
        "gpu_available": bool(free_values),
        "max_free_mem": max(free_values) // 2**20 if free_values else None,
        "device": ctx.devices,
    }


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Journal writable, DICOM port listening, models loadable, device usable; 503 naming the failing
    checks otherwise."""
    body = await asyncio.to_thread(_readiness, context_of(request))
    return JSONResponse(body, status_code=200 if not body["failing"] else 503)


def _code(code: Any) -> dict[str, str] | None:
    if code is None:
        return None
    return {"value": str(code.value), "scheme": str(code.scheme_designator), "meaning": str(code.meaning)}


def describe_model(model: Any, *, with_paths: bool) -> dict[str, Any]:
    segments = []
    for value, seg in sorted(model.segments.items()):
        segments.append(
            {
                "number": value,
                "label": seg.label,
                "description": seg.description,
                "category": _code(seg.coding.category),
                "type": _code(seg.coding.property_type),
                "tracking_id": seg.tracking_id,
            }
        )
    out: dict[str, Any] = {
        "id": model.id,
        "name": model.name,
        "aliases": list(model.aliases),
        "labels": {str(k): v for k, v in sorted(model.labels.items())},
        "channel_names": {str(k): v for k, v in sorted(model.channel_names.items())},
        "input_channels": len(model.channel_names),
        "segments": segments,
        "min_mem": model.min_mem,
        "version": model.version,
        "default_args": model.default_args.model_dump(exclude_unset=True),
        "algorithm": {"name": model.algorithm.name, "version": model.algorithm.version},
        "series_description": model.output.series_description,
        "totalseg_task": None
        if model.totalseg is None
        else str(getattr(model.totalseg, "name", model.totalseg)),
    }
    if with_paths:
        out["nnunet_path"] = str(model.model_dir)
    return out


def _clean(info: dict[str, Any]) -> dict[str, Any]:
    names = [f"{s['label']}" for s in info["segments"]]
    channels = ", ".join(info["channel_names"].values())
    info["description"] = "\n".join(
        [
            "Segments the following regions:",
            ", ".join(names),
            "Number of input channels:",
            str(info["input_channels"]),
        ]
    )
    lines = [
        f"\t- {s['number']}: {s['label']}" + (f" ({s['type']['meaning']})" if s["type"] else "")
        for s in info["segments"]
    ]
    info["description_long"] = "\n".join(
        ["Segments the following regions:", *lines, "Uses the following channels:", f"\t- {channels}"]
    )
    return info


def _catalog_info(ctx: HttpContext, *, clean: bool) -> dict[str, Any]:
    catalog = ctx.catalog
    if catalog is None:
        return {}
    out = {}
    for model_id in catalog.ids():
        info = describe_model(catalog.resolve(model_id), with_paths=not clean)
        out[model_id] = _clean(info) if clean else info
    return out


@router.get("/model_info")
async def model_info(request: Request) -> dict[str, Any]:
    """Every model: aliases, labels, segments (codes), input channels, defaults, and its folder."""
    return _catalog_info(context_of(request), clean=False)


@router.get("/model_info_clean")
async def model_info_clean(request: Request) -> dict[str, Any]:
    """As /model_info without server paths, with nnunet_serve's short and long descriptions."""
    return _catalog_info(context_of(request), clean=True)


@router.get("/request-params")
async def request_params() -> dict[str, Any]:
    """The JSON schema of the inference request."""
    return InferRequest.model_json_schema()


@router.get("/expire", dependencies=[Depends(require_token)])
async def expire(request: Request) -> dict[str, str]:
    """Drop the warm predictors of every device (the next job loads its model again)."""
    executors = context_of(request).executors
    n = sum([await asyncio.to_thread(_expire, e) for e in executors])
    logger.info("predictor caches expired over HTTP: %d predictor(s) dropped", n)
    return {"status": "ok", "message": f"Expired {n} items"}


def _expire(executor: Executor) -> int:
    """Drop the executor's cached models (:meth:`inference.api.Executor.expire`); how many it held,
    when it says (an in-process executor's predictor cache)."""
    cache = getattr(executor, "cache", None)
    held = len(cache) if cache is not None else 0
    executor.expire()
    return held
