"""The sender: a persistent outbox drained into the configured destinations.

Deliveries live in the journal. The sender thread claims the due ones, groups them by destination and
sends each group over ONE association that proposes only the presentation contexts those files need
(their SOP classes, each with the file's transfer syntax). Every file's result is recorded:

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext

from dicom_node import dimse_status
from dicom_node.backoff import Backoff
from dicom_node.config import DestinationConfig, SendingSection
from dicom_node.journal import Journal
from dicom_node.loop import Clock, LoopThread

logger = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class _Item:
    delivery: dict[str, Any]
    path: Path
    sop_class_uid: str
    transfer_syntax: str


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = True


def requested_contexts(items: Sequence[tuple[str, str]]) -> list[PresentationContext]:
    """One presentation context per (SOP class, transfer syntax) pair needed. An uncompressed
    little-endian file may also go implicit/explicit, so its context offers both."""
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for sop_class, ts in items:
        syntaxes: tuple[str, ...] = (ts,)
        if ts in _UNCOMPRESSED:
            syntaxes = (ts, *(s for s in _UNCOMPRESSED if s != ts))
        wanted[(sop_class, tuple(syntaxes))] = None
    if len(wanted) > 128:
        raise ValueError(f"{len(wanted)} presentation contexts needed; at most 128 fit one association")
    return [build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in wanted]


class Sender:
    """Drains the journal's outbox; runs in its own thread (:meth:`start`, :meth:`wake`, :meth:`stop`)."""

    def __init__(
        self,
        journal: Journal,
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
        self._storage_dir = Path(storage_dir)
        self._calling_ae = calling_ae
        self._give_up_after = settings.give_up_after_hours * 3600.0
        self._backoff = Backoff(
            settings.backoff_initial_seconds, settings.backoff_max_seconds, rng or random.Random()
        )
        self._clock = clock
        self._batch_limit = batch_limit
        self._loop = LoopThread("sender", self.send_due, clock=clock, max_poll=max_poll)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._loop.start()

    def request_stop(self) -> None:
        """Take no new work; :meth:`stop` waits for the current step."""
        self._loop.request_stop()

    def wake(self) -> None:
        self._loop.wake()

    def stop(self, timeout: float = 30.0) -> None:
        self._loop.stop(timeout)

    # ------------------------------------------------------------------ work

    def send_due(self) -> float | None:
        """Send every due delivery once; returns when the next one becomes due."""
        batch = self._journal.claim_deliveries(self._clock(), limit=self._batch_limit)
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for d in batch:
            groups[d["destination"]].append(d)
        for name, deliveries in groups.items():
            if self._loop.stopping:
                self._release(deliveries, "not sent: the node is stopping")
                continue
            self._send_group(name, deliveries)
        if len(batch) >= self._batch_limit:
            return self._clock()
        return self._journal.next_delivery_time()

    def _send_group(self, name: str, deliveries: list[dict[str, Any]]) -> None:
        dest = self._destinations.get(name)
        if dest is None:
            known = ", ".join(sorted(self._destinations)) or "none"
            for d in deliveries:
                self._record(
                    d,
                    _Attempt(
                        False,
                        error=f"destination {name!r} is not configured (configured: {known})",
                        retryable=False,
                    ),
                )
            return
        items: list[_Item] = []
        for d in deliveries:
            path = self._storage_dir / d["path"]
            try:
                meta = read_file_meta_info(path)
                ts = str(meta.TransferSyntaxUID)
            except (OSError, AttributeError, ValueError) as exc:
                self._record(
                    d, _Attempt(False, error=f"result file {path} unreadable: {exc}", retryable=False)
                )
                continue
            items.append(_Item(d, path, d["sop_class_uid"], ts))
        if items:
            self._send_items(name, dest, items)

    def _send_items(self, name: str, dest: DestinationConfig, items: list[_Item]) -> None:
        where = f"{dest.ae_title}@{dest.host}:{dest.port} ({name})"
        ae = AE(ae_title=dest.calling_ae or self._calling_ae)
        ae.acse_timeout = dest.timeout_seconds
        ae.dimse_timeout = dest.timeout_seconds
        ae.network_timeout = dest.timeout_seconds
        ae.connection_timeout = dest.timeout_seconds
        contexts = requested_contexts([(i.sop_class_uid, i.transfer_syntax) for i in items])
        seen = _AssociationObserver()
        assoc: Association | None = None
        try:
            assoc = ae.associate(
                dest.host, dest.port, contexts=contexts, ae_title=dest.ae_title, evt_handlers=seen.handlers()
            )
            if not assoc.is_established:
                error = f"association with {where} {seen.why_not_established(assoc)}"
                logger.warning("%s; %d result(s) will be retried", error, len(items))
                for item in items:
                    self._record(item.delivery, _Attempt(False, error=error))
                return
            for n, item in enumerate(items):
                if self._loop.stopping or not assoc.is_established:
                    reason = "node stopping" if self._loop.stopping else f"association with {where} ended"
                    for rest in items[n:]:
                        self._record(rest.delivery, _Attempt(False, error=f"not sent: {reason}"))
                    return
                self._record(item.delivery, self._store_one(assoc, item, where))
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()
            ae.shutdown()

    def _store_one(self, assoc: Association, item: _Item, where: str) -> _Attempt:
        try:
            rsp = assoc.send_c_store(item.path)
        except ValueError as exc:  # no accepted context, or cannot encode
            return _Attempt(False, error=f"{where}: {exc}")
        except (OSError, AttributeError) as exc:
            return _Attempt(False, error=f"{item.path}: {exc}", retryable=False)
        status = rsp.get("Status") if rsp is not None else None
        if status is None:
            return _Attempt(False, error=f"{where}: no C-STORE response (timeout or abort)")
        status = int(status)
        if dimse_status.is_success(status) or dimse_status.is_warning(status):
            return _Attempt(True, status=status)
        return _Attempt(False, status=status, error=f"{where}: {dimse_status.describe(status)}")

    # ------------------------------------------------------------------ bookkeeping

    def _record(self, d: dict[str, Any], attempt: _Attempt) -> None:
        now = self._clock()
        if attempt.ok:
            self._journal.finish_delivery(d["id"], ok=True, now=now, status=attempt.status)
            logger.info(
                "delivered %s to %s (status 0x%04X, attempt %d)",
                d["sop_instance_uid"],
                d["destination"],
                attempt.status or 0,
                d["attempts"],
            )
            return
        age = now - float(d["created_at"])
        if attempt.retryable and age < self._give_up_after:
            retry_at = now + self._backoff.delay(int(d["attempts"]))
            self._journal.finish_delivery(
                d["id"], ok=False, now=now, status=attempt.status, error=attempt.error, retry_at=retry_at
            )
            return
        if attempt.retryable:
            error = (
                f"gave up after {d['attempts']} attempt(s) over {age / 3600.0:.1f} h; last error: "
                f"{attempt.error}"
            )
        else:
            error = attempt.error or "failed"
        self._journal.finish_delivery(d["id"], ok=False, now=now, status=attempt.status, error=error)
        self._journal.log_event(
            "error",
            "delivery_failed",
            f"delivery {d['id']} of {d['sop_instance_uid']} to {d['destination']}: {error}",
            series_uid=d["series_uid"],
            job_id=d["job_id"],
            now=now,
        )
        logger.error("delivery %s to %s failed: %s", d["id"], d["destination"], error)

    def _release(self, deliveries: list[dict[str, Any]], why: str) -> None:
        now = self._clock()
        for d in deliveries:
            self._journal.finish_delivery(d["id"], ok=False, now=now, error=why, retry_at=now)


class _AssociationObserver:
    """Collects what happened while associating, to say why an association was not established."""

    def __init__(self) -> None:
        self.connected = False
        self.acse: list[Any] = []

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_ACSE_RECV, self._on_acse)]

    def _on_open(self, event: evt.Event) -> None:
        self.connected = True

    def _on_acse(self, event: evt.Event) -> None:
        self.acse.append(getattr(event, "primitive", None))

    def why_not_established(self, assoc: Association) -> str:
        if not self.connected:
            return "failed: connection refused or unreachable"
        rsp = self.acse[-1] if self.acse else None
        if assoc.is_rejected:
            result = getattr(rsp, "result_str", None) or "rejected"
            reason = getattr(rsp, "reason_str", None) or "no reason given"
            return f"rejected ({result}: {reason})"
        if rsp is not None and getattr(rsp, "result", None) == 0x00:
            return "aborted: the peer accepted none of the offered presentation contexts"
        if assoc.is_aborted:
            return "aborted by the peer"
        return "failed: no answer to the association request (timeout)"
