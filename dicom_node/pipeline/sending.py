"""The sender: a persistent outbox drained into the configured destinations.

Deliveries live in the journal. The sender thread claims the due ones, groups them by destination and
sends each group with :func:`dicom_node.net.scu.send_files`: ONE association per destination batch that
proposes only the presentation contexts those files need (each file's SOP class with its own transfer
syntax; the files go as stored, never re-encoded). Every file's result is recorded:

- success, or a warning status (0x0001, 0xBxxx): delivered (the status is kept);
- failure status, no response, association rejected/refused/aborted: pending again at
  ``now + jittered exponential backoff``, until the delivery is ``give_up_after_hours`` old; then
  failed with the last error (and an error event);
- a missing result file or an unconfigured destination: failed at once (retrying cannot help).
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicom_node.config import DestinationConfig, SendingSection
from dicom_node.net import dimse_status
from dicom_node.net.peers import Peer
from dicom_node.net.scu import SendResult, send_files
from dicom_node.net.tls import client_context
from dicom_node.pipeline.backoff import Backoff
from dicom_node.pipeline.loop import Clock, LoopService, LoopThread
from dicom_node.storage.journal import DeliveryRow
from dicom_node.storage.journal.event_log import EventLog

logger = logging.getLogger(__name__)


class SenderJournal(EventLog, Protocol):
    """What the sender needs of :class:`dicom_node.storage.journal.Journal`."""

    def claim_deliveries(
        self, now: float, *, destination: str | None = ..., limit: int = ...
    ) -> list[DeliveryRow]: ...
    def next_delivery_time(self) -> float | None: ...

    def finish_delivery(
        self,
        delivery_id: int,
        *,
        ok: bool,
        now: float,
        status: int | None = ...,
        error: str | None = ...,
        retry_at: float | None = ...,
    ) -> None: ...


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = True


class Sender(LoopService):
    """Drains the journal's outbox; runs in its own thread (:meth:`start`, :meth:`wake`, :meth:`stop`)."""

    def __init__(
        self,
        journal: SenderJournal,
        destinations: Mapping[str, DestinationConfig],
        *,
        storage_dir: Path,
        calling_ae: str,
        settings: SendingSection,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        batch_limit: int = 50,
        max_poll: float = 5.0,
    ) -> None:
        self._journal = journal
        self._destinations = dict(destinations)
        self._tls = {  # built once: certificates were checked when the configuration loaded
            name: client_context(d.tls, f"destinations.{name}")
            for name, d in self._destinations.items()
            if d.tls is not None
        }
        self._storage_dir = Path(storage_dir)
        self._calling_ae = calling_ae
        self._give_up_after = settings.give_up_after_hours * 3600.0
        self._backoff = Backoff(
            settings.backoff_initial_seconds, settings.backoff_max_seconds, rng or random.Random()
        )
        self._clock = clock
        self._batch_limit = batch_limit
        self._loop = LoopThread("sender", self.send_due, clock=clock, max_poll=max_poll)

    # ------------------------------------------------------------------ work

    def send_due(self) -> float | None:
        """Send every due delivery once; returns when the next one becomes due."""
        batch = self._journal.claim_deliveries(self._clock(), limit=self._batch_limit)
        groups: dict[str, list[DeliveryRow]] = defaultdict(list)
        for d in batch:
            groups[d.destination].append(d)
        for name, deliveries in groups.items():
            if self._loop.stopping:
                self._release(deliveries, "not sent: the node is stopping")
                continue
            try:
                self._send_group(name, deliveries)
            except Exception as exc:  # one destination's failure must not stop the others
                logger.exception("sending to %s: unexpected error", name)
                error = f"unexpected error: {type(exc).__name__}: {exc}"
                for d in deliveries:
                    self._record_safely(d, _Attempt(False, error=error))
        if len(batch) >= self._batch_limit:
            return self._clock()
        return self._journal.next_delivery_time()

    def _send_group(self, name: str, deliveries: list[DeliveryRow]) -> None:
        dest = self._destinations.get(name)
        if dest is None:
            known = ", ".join(sorted(self._destinations)) or "none"
            error = f"destination {name!r} is not configured (configured: {known})"
            for d in deliveries:
                self._record(d, _Attempt(False, error=error, retryable=False))
            return
        items: list[tuple[DeliveryRow, Path]] = []
        for d in deliveries:
            path = self._storage_dir / d.path
            if not path.is_file():
                self._record(d, _Attempt(False, error=f"result file {path} is missing", retryable=False))
                continue
            items.append((d, path))
        if not items:
            return
        where = f"{dest.ae_title}@{dest.host}:{dest.port}{' over TLS' if dest.tls else ''} ({name})"
        results = send_files(
            [path for _, path in items],
            Peer(dest.ae_title, dest.host, dest.port, tls=self._tls.get(name)),
            dest.calling_ae or self._calling_ae,
            timeout=dest.timeout_seconds,
        )
        failed = 0
        for (d, _), result in zip(items, results, strict=True):
            attempt = _attempt_of(result, where)
            failed += not attempt.ok
            self._record(d, attempt)
        if failed:
            logger.warning(
                "%d of %d result(s) not delivered to %s; retrying later", failed, len(items), where
            )

    # ------------------------------------------------------------------ bookkeeping

    def _record(self, d: DeliveryRow, attempt: _Attempt) -> None:
        now = self._clock()
        if attempt.ok:
            self._journal.finish_delivery(d.id, ok=True, now=now, status=attempt.status)
            logger.info(
                "delivered %s to %s (status 0x%04X, attempt %d)",
                d.sop_instance_uid,
                d.destination,
                attempt.status or 0,
                d.attempts,
                extra={
                    "hop": "delivered",
                    "job_id": d.job_id,
                    "series_uid": d.series_uid,
                    "destination": d.destination,
                    "ms": round((now - d.created_at) * 1000),
                },
            )
            return
        age = now - d.created_at
        if attempt.retryable and age < self._give_up_after:
            retry_at = now + self._backoff.delay(d.attempts)
            self._journal.finish_delivery(
                d.id, ok=False, now=now, status=attempt.status, error=attempt.error, retry_at=retry_at
            )
            return
        if attempt.retryable:
            error = (
                f"gave up after {d.attempts} attempt(s) over {age / 3600.0:.1f} h; last error: "
                f"{attempt.error}"
            )
        else:
            error = attempt.error or "failed"
        self._journal.finish_delivery(d.id, ok=False, now=now, status=attempt.status, error=error)
        self._journal.log_event(
            "error",
            "delivery_failed",
            f"delivery {d.id} of {d.sop_instance_uid} to {d.destination}: {error}",
            series_uid=d.series_uid,
            job_id=d.job_id,
            now=now,
        )
        logger.error("delivery %s to %s failed: %s", d.id, d.destination, error)

    def _record_safely(self, d: DeliveryRow, attempt: _Attempt) -> None:
        try:
            self._record(d, attempt)
        except Exception:
            logger.exception("delivery %d: cannot record its attempt (recovered at restart)", d.id)

    def _release(self, deliveries: list[DeliveryRow], why: str) -> None:
        now = self._clock()
        for d in deliveries:
            self._journal.finish_delivery(d.id, ok=False, now=now, error=why, retry_at=now)


def _attempt_of(result: SendResult, where: str) -> _Attempt:
    """A delivery attempt from one file's send result: stored (success or warning), or why not."""
    if result.status is None:
        return _Attempt(False, error=f"{where}: {result.error or 'not sent'}")
    if result.ok:
        return _Attempt(True, status=result.status)
    detail = f" ({result.error})" if result.error else ""
    return _Attempt(
        False, status=result.status, error=f"{where}: {dimse_status.describe(result.status)}{detail}"
    )
