"""Operator actions on the journal: retry a finished job, resend a delivery, run a series again.

The same functions serve ``POST /jobs/{id}/retry``, ``POST /deliveries/{id}/resend``,
``POST /series/{uid}/rerun`` and the matching CLI commands (``dicom-node retry JOB_ID``, ``resend
DELIVERY_ID``, ``rerun SERIES_UID``). Each is one journal transaction; ``wake`` tells the running
workers or sender there is work (a CLI acting on the journal of a node in another process passes
nothing: that node finds the work at its next poll). An action that does nothing says why in its
:class:`~dicom_node.storage.journal.ActionOutcome`; it is also written to the journal's events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dicom_node.pipeline.routing import RuleSet, job_specs
from dicom_node.storage.journal import ActionOutcome, Journal, Trigger

logger = logging.getLogger(__name__)


def _nothing() -> None:
    return None


def retry_job(
    journal: Journal, job_id: int, *, now: float, wake: Callable[[], None] = _nothing
) -> ActionOutcome:
    """A finished (failed, done or empty) job runs again as a new job of the same series generation."""
    outcome = journal.retry_finished_job(job_id, now=now)
    if outcome.ok:
        logger.info("job %d retried as job %d", job_id, outcome.ids[0])
        wake()
    return outcome


def resend_delivery(
    journal: Journal, delivery_id: int, *, now: float, wake: Callable[[], None] = _nothing
) -> ActionOutcome:
    """A failed (or done) delivery is queued again at once, with a fresh attempt count."""
    outcome = journal.resend_delivery(delivery_id, now=now)
    if outcome.ok:
        logger.info("delivery %d queued again", delivery_id)
        wake()
    return outcome


def rerun_series(
    journal: Journal,
    series_uid: str,
    rules: RuleSet,
    *,
    now: float,
    wake: Callable[[], None] = _nothing,
) -> ActionOutcome:
    """New jobs for a series' current generation, one per rule it matched (looked up in the rules in
    effect now). A series that matched no rule, or whose rules are gone, is refused."""
    series = journal.get_series(series_uid)
    if series is None:
        return ActionOutcome(False, reason=f"series {series_uid} is not in the journal", missing=True)
    names = list(series.rules or ())
    if not names:
        return ActionOutcome(False, reason=f"series {series_uid} matched no rule; nothing to rerun")
    by_name = {r.name: r for r in rules}
    missing = [n for n in names if n not in by_name]
    if missing:
        return ActionOutcome(
            False, reason=f"series {series_uid}: rule(s) {', '.join(missing)} no longer configured"
        )
    outcome = journal.queue_series_jobs(
        series_uid, job_specs([by_name[n] for n in names]), trigger=Trigger.MANUAL, now=now
    )
    if outcome.ok:
        journal.log_event(
            "info",
            "series_rerun",
            f"series rerun by an operator: job(s) {', '.join(map(str, outcome.ids))}",
            series_uid=series_uid,
            now=now,
        )
        logger.info("series %s rerun: job(s) %s", series_uid, ", ".join(map(str, outcome.ids)))
        wake()
    return outcome
