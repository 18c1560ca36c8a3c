"""HTTP requests as node traffic: file the request's DICOM files like received instances, queue a job
with trigger ``http`` for the series, wait for it.

Files go through the node's :class:`~dicom_node.storage.ingest.Ingestor` (the C-STORE handler's and
the drop folder's path): spool, journal, same series generations. The origin is called AE = the
node's AE title, calling AE ``HTTP``, and an association id ``http:<hex>``; the completion loop
leaves series last touched by such an origin alone
(:func:`~dicom_node.storage.ingest.is_request_origin`), because the request queues its own job
(:meth:`Journal.queue_series_jobs`) with the request's models and arguments and no destination.
The worker runs it like any other job, so the SEG is the one the DICOM path writes for the same
series and model (deterministic UIDs).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.errors import CannotUnderstandError, InvalidUIDError, StorageError
from dicom_node.storage.header import read_header, read_part10_layout
from dicom_node.storage.ingest import REQUEST_ASSOCIATION_PREFIX, Ingestor, Origin
from dicom_node.storage.journal import JobRow, JobSpec, JobState, Journal, Trigger

logger = logging.getLogger(__name__)

HTTP_CALLING_AE = "HTTP"
HTTP_RULE = "http-request"
FINISHED = frozenset({JobState.DONE, JobState.EMPTY, JobState.FAILED, JobState.SUPERSEDED})


def http_origin(called_ae: str) -> Origin:
    return Origin(
        called_ae=called_ae,
        calling_ae=HTTP_CALLING_AE,
        association_id=REQUEST_ASSOCIATION_PREFIX + uuid.uuid4().hex,
    )


@dataclass
class FiledFiles:
    """What :func:`file_instances` filed: instances per series (in first-seen order) and refusals."""

    series: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, str] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def image_series(self) -> list[str]:
        """Series that can be inference input (not SEG/RTSTRUCT/SR/PR that came along)."""
        skip = {"SEG", "RTSTRUCT", "SR", "PR", "KO", "REG"}
        return [uid for uid in self.series if self.modalities.get(uid, "") not in skip]


def file_instances(
    paths: Iterable[Path], ingestor: Ingestor, origin: Origin, *, names: Sequence[str] = ()
) -> FiledFiles:
    """Read, check and file DICOM files (each read once). Files that are not usable DICOM are listed
    in ``rejected`` with the reason (``names``: how to call them, by index; default the path)."""
    report = FiledFiles()
    for index, path in enumerate(paths):
        name = names[index] if index < len(names) else str(path)
        try:
            data = path.read_bytes()
            fp = io.BytesIO(data)
            layout = read_part10_layout(fp)
            limit = ingestor.spool.max_dataset_bytes
            header = read_header(fp, layout.transfer_syntax, max_inflated_bytes=limit).validated()
            with memoryview(data) as view:
                ingestor.ingest(header, layout.transfer_syntax, view[layout.dataset_offset :], origin)
        except (CannotUnderstandError, InvalidUIDError) as exc:
            report.rejected.append((name, str(exc)))
            continue
        except OSError as exc:
            report.rejected.append((name, f"cannot read: {exc}"))
            continue
        except StorageError:
            raise  # disk full or spool failure: the whole request fails (507/500)
        report.series[header.series_uid] = report.series.get(header.series_uid, 0) + 1
        report.modalities.setdefault(header.series_uid, header.modality)
    return report


def queue_request_job(
    journal: Journal,
    series_uid: str,
    *,
    models: Sequence[str],
    args: Mapping[str, Any],
    destinations: Sequence[str] = (),
    now: float,
) -> int:
    """Queue the job of an HTTP request; returns its id. Raises KeyError if the series is gone (a
    retention purge between filing and queuing), ValueError if it has no instances."""
    spec = JobSpec(rule_name=HTTP_RULE, models=list(models), destinations=list(destinations), args=dict(args))
    [job_id] = journal.queue_series_jobs(series_uid, [spec], trigger=Trigger.HTTP, now=now)
    return job_id


async def wait_for_job(
    journal: Callable[[], Journal], job_id: int, *, timeout: float, poll: float = 0.1
) -> JobRow | None:
    """The job once it has finished (done, empty, failed or superseded), or None after ``timeout``
    seconds (it keeps running; the client can poll ``GET /jobs/{id}``)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await asyncio.to_thread(journal().get_job, job_id)
        if job is None or job.state in FINISHED:
            return job
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(poll)
