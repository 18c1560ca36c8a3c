"""Operator actions on a node's journal: retry a job, resend a delivery, rerun a series.

Each action writes new work (trigger ``manual``, with an event) into the journal in one transaction and
returns what it queued; the running node's worker and sender find it at their next pass (they look at
the journal at least every few seconds), so the actions work while the node runs, from another process
(``dicom-node retry|resend|rerun``) or from the HTTP API. Failures raise :class:`ActionError` with a
message for the operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dicom_node.errors import NodeError
from dicom_node.storage.journal import Journal


class ActionError(NodeError):
    """An operator action that cannot be done (unknown id, nothing to rerun, job still running)."""


@dataclass(frozen=True)
class ActionResult:
    """What an action queued: new job ids or new delivery ids, and one line saying so."""

    jobs: tuple[int, ...] = ()
    deliveries: tuple[int, ...] = ()
    message: str = ""


def retry_job(journal: Journal, job_id: int, *, clock: Callable[[], float] = time.time) -> ActionResult:
    try:
        new_id = journal.manual_retry_job(job_id, now=clock())
    except (KeyError, ValueError) as exc:
        raise ActionError(_text(exc)) from exc
    return ActionResult(jobs=(new_id,), message=f"job {job_id} queued again as job {new_id}")


def resend_delivery(
    journal: Journal, delivery_id: int, *, clock: Callable[[], float] = time.time
) -> ActionResult:
    try:
        new_id = journal.manual_resend_delivery(delivery_id, now=clock())
    except KeyError as exc:
        raise ActionError(_text(exc)) from exc
    return ActionResult(
        deliveries=(new_id,), message=f"delivery {delivery_id} queued again as delivery {new_id}"
    )


def rerun_series(
    journal: Journal, series_uid: str, *, rule: str | None = None, clock: Callable[[], float] = time.time
) -> ActionResult:
    try:
        ids = journal.manual_rerun_series(series_uid, rule=rule, now=clock())
    except KeyError as exc:
        raise ActionError(_text(exc)) from exc
    return ActionResult(
        jobs=tuple(ids), message=f"series {series_uid}: job(s) {', '.join(map(str, ids))} queued"
    )


def _text(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else str(exc)
