"""nnunet_serve's inference endpoints on the node's journal and workers: ``POST /infer_file``,
``POST /infer``, ``POST /infer_orthanc`` and ``GET /download/{job_id}``.

Each request files its DICOM files like received instances, queues one job (trigger ``http``) for
the series and waits for it (:mod:`dicom_node.http.submit`); the answer has nnunet_serve's fields
(``status``, ``time_elapsed``, ``nnunet_path``, ``dicom_segmentation``...) plus ``job_id``, and
names the outputs as they appear in ``/download/{job_id}``'s zip, never as server paths.
A node job segments one series: a request holding several image series is refused (422).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import FormData, UploadFile

from dicom_node.errors import OutOfResourcesError, StorageError
from dicom_node.http.auth import require_token
from dicom_node.http.context import HttpContext, context_of
from dicom_node.http.orthanc import OrthancClient, OrthancClientError, check_series_id
from dicom_node.http.requests import InferRequest, OrthancRequest
from dicom_node.http.submit import file_instances, http_origin, queue_request_job, wait_for_job
from dicom_node.http.uploads import UnpackLimits, UnsafeUploadError, unpack
from dicom_node.storage.journal import JobRow, JobState
from inference.errors import UnknownModelError
from inference.request_check import request_problems

logger = logging.getLogger(__name__)

router = APIRouter()

MB = 1024 * 1024
OUTPUT_KEYS = {
    "seg": "dicom_segmentation",
    "rtstruct": "dicom_struct",
    "nifti_labels": "nifti_prediction",
    "nifti_probabilities": "nifti_proba",
    "nifti_input": "nifti_inputs",
}


def _unprocessable(field: Sequence[str | int], message: str) -> HTTPException:
    return HTTPException(422, [{"loc": list(field), "msg": message, "type": "value_error"}])


def _validation_422(where: str, exc: ValidationError) -> HTTPException:
    details = [
        {"loc": [where, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False)
    ]
    return HTTPException(422, details)


def check_models(ctx: HttpContext, req: InferRequest, where: str) -> list[str]:
    """Resolve the models (404 for an unknown one) and check the arguments against them and the one
    series a node job gets (422 naming the argument), before any file is touched
    (:func:`inference.request_check.request_problems`, the check the rules pass at load). Returns the
    canonical model ids."""
    catalog = ctx.require_catalog()
    ids: list[str] = []
    for name in req.models:
        try:
            ids.append(catalog.resolve(name).id)
        except UnknownModelError as exc:
            raise HTTPException(404, f"nnunet_id: {exc}") from exc
    problems = request_problems(catalog, ids, req.overrides(), n_series=1)
    if problems:
        raise HTTPException(
            422,
            [
                {"loc": [where, p.key or "nnunet_id"], "msg": p.describe(), "type": "value_error"}
                for p in problems
            ],
        )
    return ids


@contextmanager
def _scratch(ctx: HttpContext) -> Iterator[Path]:
    folder = ctx.storage_dir / "http-tmp" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _limits(ctx: HttpContext) -> UnpackLimits:
    s = ctx.settings
    return UnpackLimits(max_files=s.max_upload_files, max_unpacked=s.max_unpacked_mb * MB)


def _file_series(ctx: HttpContext, files: Sequence[Path], names: Sequence[str], where: str) -> str:
    """File the request's instances; the one image series they hold (422 otherwise)."""
    origin = http_origin(ctx.node.ae_title)
    try:
        filed = file_instances(files, ctx.ingestor(), origin, names=names)
    except OutOfResourcesError as exc:
        raise HTTPException(507, str(exc)) from exc
    except StorageError as exc:
        raise HTTPException(500, f"cannot file the instances: {exc}") from exc
    series = filed.image_series
    # what the request filed but will not segment is kept like an unmatched series (retention
    # removes it), never left waiting for a completion that the rules do not decide for it
    others = (
        [uid for uid in filed.series if uid not in series[:1]] if len(series) == 1 else list(filed.series)
    )
    for uid in others:
        ctx.journal().set_routing(uid, rules=[], note="filed by an HTTP request that did not segment it")
    if not series:
        reasons = "; ".join(f"{n}: {r}" for n, r in filed.rejected[:5])
        raise _unprocessable(
            [where], f"no usable DICOM image series in the request ({reasons or 'no files'})"
        )
    if len(series) > 1:
        raise _unprocessable(
            [where], f"the request holds {len(series)} image series; a node job segments one series"
        )
    if filed.rejected:
        logger.warning(
            "http request: %d file(s) refused, e.g. %s: %s", len(filed.rejected), *filed.rejected[0]
        )
    logger.info("http request: filed %d instance(s) of series %s", filed.series[series[0]], series[0])
    return series[0]


def result_payload(
    ctx: HttpContext, job: JobRow, request_payload: dict[str, Any], started: float
) -> dict[str, Any]:
    catalog = ctx.catalog
    models = [catalog.resolve(m) for m in job.models] if catalog is not None else []
    payload: dict[str, Any] = {
        "status": "success" if job.state in (JobState.DONE, JobState.EMPTY) else "failure",
        "job_id": job.id,
        "job_state": str(job.state),
        "series_uid": job.series_uid,
        "time_elapsed": time.monotonic() - started,
        "timings": dict(job.timings),
        "gpu": ctx.devices,
        "nnunet_path": [str(m.model_dir) for m in models],
        "metadata": [{"id": m.id, "version": m.version, "algorithm": m.algorithm.name} for m in models],
        "request": request_payload,
        "is_empty": job.state == JobState.EMPTY,
        "error": job.error,
        "download": f"/download/{job.id}",
    }
    for name in OUTPUT_KEYS.values():
        payload[name] = []
    for out in job.outputs:
        kind = OUTPUT_KEYS.get(out.kind)
        if kind is not None:
            payload[kind].append(Path(out.path).name)
    payload["sop_instance_uids"] = [o.sop_instance_uid for o in job.outputs if o.sop_instance_uid]
    return payload


async def run_request(
    ctx: HttpContext,
    req: InferRequest,
    files: Sequence[Path],
    names: Sequence[str],
    *,
    where: str,
    started: float,
) -> tuple[int, dict[str, Any]]:
    """File, queue, wait; (HTTP status, payload)."""
    series_uid = await asyncio.to_thread(_file_series, ctx, files, names, where)
    journal = ctx.journal()
    job_id = await asyncio.to_thread(
        queue_request_job, journal, series_uid, models=req.models, args=req.overrides(), now=ctx.clock()
    )
    ctx.node.wake_workers()
    logger.info(
        "http request: job %d queued for series %s (models %s)",
        job_id,
        series_uid,
        "+".join(req.models),
        extra={
            "hop": "http_request",
            "job_id": job_id,
            "series_uid": series_uid,
            "calling_ae": "HTTP",
            "called_ae": ctx.node.ae_title,
            "ms": round((time.monotonic() - started) * 1000),
        },
    )
    request_payload = req.model_dump(exclude_unset=True, mode="json")
    job = await wait_for_job(ctx.journal, job_id, timeout=ctx.settings.job_timeout_seconds)
    if job is None:
        return 504, {
            "status": "failure",
            "job_id": job_id,
            "series_uid": series_uid,
            "error": f"job {job_id} still running after {ctx.settings.job_timeout_seconds:.0f} s;"
            f" see /jobs/{job_id}",
        }
    payload = result_payload(ctx, job, request_payload, started)
    code = {JobState.DONE: 200, JobState.EMPTY: 200, JobState.SUPERSEDED: 409}.get(job.state, 500)
    if job.state == JobState.SUPERSEDED:
        payload["error"] = "the series received new instances while the job ran; a newer job replaces it"
    return code, payload


#: Fields that are lists even when a query string gives them once (``?use_folds=0``).
QUERY_LISTS = frozenset({"use_folds", "series_folders", "series_ids"})

R = TypeVar("R", bound=InferRequest)


def request_from_query(request: Request, model: type[R]) -> R:
    """A request model from query parameters (nnunet_serve's ``/infer`` takes its request there): a
    repeated key is a list; values are coerced by the model (``tta=true``, ``proba_threshold=0.5``)."""
    query = request.query_params
    data: dict[str, Any] = {}
    for key in query:
        values = query.getlist(key)
        single = values[0] if len(values) == 1 else None
        data[key] = values if single is None or (key in QUERY_LISTS and single != "all") else single
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_422("query", exc) from exc


# ---------------------------------------------------------------------- endpoints


@router.post("/infer_file", dependencies=[Depends(require_token)])
async def infer_file(request: Request) -> JSONResponse:
    """multipart: ``file`` (zip or tar of one series' DICOM files, or one DICOM file) and ``request``
    (JSON, nnunet_serve's fields). Answers when the job has finished."""
    ctx = context_of(request)
    started = time.monotonic()
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload, req = _parse_form(form)
        check_models(ctx, req, "request")
        with _scratch(ctx) as scratch:
            archive = scratch / "upload"
            await asyncio.to_thread(_save_upload, upload, archive)
            name = upload.filename or "upload"
            await form.close()  # the spooled upload is not needed any more
            try:
                unpacked = await asyncio.to_thread(unpack, archive, scratch / "files", _limits(ctx))
            except UnsafeUploadError as exc:
                logger.warning("http upload refused: %s", exc)
                raise HTTPException(400, f"file: {exc}") from exc
            archive.unlink()
            names = [f"{name}#{i}" for i in range(len(unpacked.files))]
            code, payload = await run_request(ctx, req, unpacked.files, names, where="file", started=started)
    finally:
        await form.close()
    return JSONResponse(payload, status_code=code)


def _parse_form(form: FormData) -> tuple[UploadFile, InferRequest]:
    upload = form.get("file")
    raw = form.get("request")
    if not isinstance(upload, UploadFile):
        raise _unprocessable(["body", "file"], "Field required: a zip or tar archive of DICOM files")
    if not isinstance(raw, str):
        raise _unprocessable(["body", "request"], "Field required: the inference request as JSON")
    try:
        req = InferRequest.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise _unprocessable(["body", "request"], f"not JSON: {exc}") from exc
    except ValidationError as exc:
        raise _validation_422("request", exc) from exc
    return upload, req


def _save_upload(upload: UploadFile, target: Path) -> None:
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1024 * 1024)


def _import_files(ctx: HttpContext, folders: Sequence[str]) -> list[Path]:
    root = ctx.settings.import_root
    if root is None:
        raise HTTPException(
            403, "POST /infer reads server folders only under http.import_root, which is not configured"
        )
    root = root.resolve()
    if len(folders) != 1:
        raise _unprocessable(
            ["body", "series_folders"], "name exactly one series folder (a node job segments one series)"
        )
    folder = (root / folders[0]).resolve()
    if not folder.is_relative_to(root) or (folder == root and folders[0] not in (".", "")):
        raise HTTPException(403, f"series_folders: {folders[0]!r} is outside the import root")
    if not folder.is_dir():
        raise HTTPException(404, f"series_folders: {folders[0]!r} is not a folder under the import root")
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            continue  # a link out of the import root is never followed
        if path.is_file() and not path.name.startswith("."):
            files.append(path)
    if len(files) > ctx.settings.max_upload_files:
        raise _unprocessable(["body", "series_folders"], f"more than {ctx.settings.max_upload_files} files")
    return files


@router.post("/infer", dependencies=[Depends(require_token)])
async def infer(request: Request, body: Annotated[InferRequest | None, Body()] = None) -> JSONResponse:
    """``series_folders``: one folder relative to the configured import root (``http.import_root``).
    The request is a JSON body, or (as nnunet_serve takes it) query parameters."""
    ctx = context_of(request)
    started = time.monotonic()
    req = body if body is not None else request_from_query(request, InferRequest)
    check_models(ctx, req, "body")
    files = await asyncio.to_thread(_import_files, ctx, req.folders())
    code, payload = await run_request(
        ctx, req, files, [str(p) for p in files], where="series_folders", started=started
    )
    return JSONResponse(payload, status_code=code)


@router.post("/infer_orthanc", dependencies=[Depends(require_token)])
async def infer_orthanc(
    request: Request, body: Annotated[OrthancRequest | None, Body()] = None
) -> JSONResponse:
    """``series_ids``: one Orthanc series id. The series is fetched over Orthanc's REST API, segmented,
    and the SEG stored back into Orthanc. A JSON body, or query parameters as nnunet_serve takes them."""
    ctx = context_of(request)
    started = time.monotonic()
    req = body if body is not None else request_from_query(request, OrthancRequest)
    settings = ctx.settings.orthanc
    if settings is None:
        raise HTTPException(503, "no Orthanc configured (http.orthanc)")
    ids = req.orthanc_ids()
    if len(ids) != 1:
        raise _unprocessable(
            ["body", "series_ids"], "name exactly one Orthanc series (a node job segments one series)"
        )
    try:
        check_series_id(ids[0])
    except ValueError as exc:
        raise _unprocessable(["body", "series_ids", 0], str(exc)) from exc
    check_models(ctx, req, "body")
    client = OrthancClient(settings)
    with _scratch(ctx) as scratch:
        archive = scratch / "series.zip"
        try:
            await asyncio.to_thread(
                client.download_series, ids[0], archive, max_bytes=ctx.settings.max_upload_mb * MB
            )
        except OrthancClientError as exc:
            code = 404 if exc.status == 404 else 502
            raise HTTPException(code, f"series_ids: {exc}") from exc
        try:
            unpacked = await asyncio.to_thread(unpack, archive, scratch / "files", _limits(ctx))
        except UnsafeUploadError as exc:
            raise HTTPException(502, f"Orthanc's archive of {ids[0]}: {exc}") from exc
        names = [f"orthanc:{ids[0]}#{i}" for i in range(len(unpacked.files))]
        code, payload = await run_request(
            ctx, req, unpacked.files, names, where="series_ids", started=started
        )
    if code == 200:
        payload["orthanc_upload"] = await asyncio.to_thread(
            _upload_results, ctx, client, int(payload["job_id"])
        )
        if payload["orthanc_upload"]["errors"]:
            code = 502
    return JSONResponse(payload, status_code=code)


def _upload_results(ctx: HttpContext, client: OrthancClient, job_id: int) -> dict[str, Any]:
    job = ctx.journal().get_job(job_id)
    responses: list[dict[str, Any]] = []
    errors: list[str] = []
    for out in job.outputs if job is not None else ():
        if out.kind not in ("seg", "rtstruct"):
            continue
        try:
            responses.append(client.upload(ctx.storage_dir / out.path))
        except OrthancClientError as exc:
            errors.append(str(exc))
    logger.info("job %d: %d result(s) stored in Orthanc, %d failed", job_id, len(responses), len(errors))
    return {"uploaded_instance_count": len(responses), "responses": responses, "errors": errors}


def _zip_outputs(ctx: HttpContext, job_id: int) -> Path:
    """The job's outputs zipped into a scratch file (the caller removes it after sending)."""
    job = ctx.journal().get_job(job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} is unknown or expired")
    present = [p for p in (ctx.storage_dir / o.path for o in job.outputs) if p.is_file()]
    if not present:
        raise HTTPException(404, f"job {job_id} has no outputs (state {job.state}, or they expired)")
    target = ctx.storage_dir / "http-tmp" / f"download-{job_id}-{uuid.uuid4().hex}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in present:
                archive.write(path, arcname=path.name)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


@router.get("/download/{job_id}", dependencies=[Depends(require_token)])
async def download(request: Request, job_id: int) -> FileResponse:
    """A zip of the job's outputs (404 for an unknown job or one whose outputs expired). The SEG holds
    the patient's identity, so the token is required when one is configured."""
    path = await asyncio.to_thread(_zip_outputs, context_of(request), job_id)
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"job-{job_id}.zip",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )
