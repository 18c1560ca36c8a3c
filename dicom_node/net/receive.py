"""The DIMSE SCP: association checks and thin C-ECHO / C-STORE handlers.

:class:`Receiver` holds what the handlers need (an :class:`~dicom_node.storage.ingest.Ingestor`, the journal,
our AE titles, the calling-AE allow-list, the wake-up callbacks) and the per-association ids; it has no
pynetdicom state of its own. :class:`~dicom_node.net.scp_server.ScpServer` builds the pynetdicom AE from
the node configuration and runs a PDU-guarded association server (:mod:`dicom_node.net.pdu_guard`).

C-STORE: on plain TCP the receive fast path writes the data set into a spool temp file as it arrives
(:mod:`~dicom_node.net.direct_store`, through :meth:`Receiver.begin_store` and :class:`StoreSink`);
under TLS pynetdicom streams it into a temp file of its own (:mod:`~dicom_node.net.switches`) and calls
:meth:`Receiver.handle_store`. Either way memory per association stays one PDU, whatever the
instance's size, and the instance is parsed up to its pixel data, checked (UIDs valid and equal to
the command's), filed durably and journaled, and only then answered 0x0000. Failures get
specific statuses with an ErrorComment (see :func:`status_for`): 0xA9xx/0xCxxx when the data is at
fault, 0xA7xx (out of resources, retry later) when we could not keep it; nothing here raises into
pynetdicom (whose generic answer would be 0xC211). Rejections and aborts are logged and journaled in
pynetdicom's words (:mod:`dicom_node.net.dimse_status`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT

from dicom_node.errors import (
    CannotUnderstandError,
    DatasetMismatchError,
    DatasetTooLargeError,
    InvalidUIDError,
    MissingAttributeError,
    OutOfResourcesError,
    SopClassNotSupportedError,
    StorageError,
    UnreadableDatasetError,
)
from dicom_node.net import dimse_status as st
from dicom_node.net.contexts import prefer_our_syntaxes
from dicom_node.net.store_sink import Command, StoreSink, checked_header, error_comment
from dicom_node.storage.header import InstanceHeader, read_part10_layout
from dicom_node.storage.ingest import Ingestor, Origin
from dicom_node.storage.journal import Journal

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- statuses

_STATUS_BY_ERROR: tuple[tuple[type[Exception], int, str, str], ...] = (
    # (error class, status, journal level, journal kind); first match wins
    (InvalidUIDError, st.CANNOT_UNDERSTAND_INVALID_UID, "warning", "store_rejected"),
    (MissingAttributeError, st.CANNOT_UNDERSTAND_MISSING_ATTRIBUTE, "warning", "store_rejected"),
    (UnreadableDatasetError, st.CANNOT_UNDERSTAND_UNREADABLE, "warning", "store_rejected"),
    (DatasetTooLargeError, st.OUT_OF_RESOURCES, "warning", "store_rejected"),
    (CannotUnderstandError, st.CANNOT_UNDERSTAND, "warning", "store_rejected"),
    (DatasetMismatchError, st.DATASET_DOES_NOT_MATCH_SOP_CLASS, "warning", "store_rejected"),
    (SopClassNotSupportedError, st.SOP_CLASS_NOT_SUPPORTED, "warning", "store_rejected"),
    (OutOfResourcesError, st.OUT_OF_RESOURCES, "error", "store_refused"),
    # a write, fsync or rename failed: our fault, not the data's (pynetdicom's storescp answers so too)
    (StorageError, st.OUT_OF_RESOURCES, "error", "store_failed"),
)


def status_for(exc: BaseException) -> tuple[int, str, str]:
    """(status, journal level, journal kind) answering a C-STORE that raised ``exc``; anything
    unexpected (the journal could not commit, a bug of ours) is 0xA701, recorded as ``store_failed``:
    the sender should retry, its data is not known to be bad."""
    for cls, status, level, kind in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status, level, kind
    return st.OUT_OF_RESOURCES_UNEXPECTED, "error", "store_failed"


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A C-STORE response status with an Error Comment (LO: 64 printable characters, no backslash)."""
    ds = Dataset()
    ds.Status = status
    text = error_comment(comment)
    if text:
        ds.ErrorComment = text
    return ds


# ---------------------------------------------------------------------------------------- receiver


@dataclass
class AssociationInfo:
    """What we know of one accepted association."""

    association_id: str
    called_ae: str
    calling_ae: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    failed: int = 0
    abort: str = ""  # who aborted and why, in pynetdicom's words, once an A-(P-)ABORT arrived


class Receiver:
    """Association checks and DIMSE handlers, bound to a server with :meth:`evt_handlers`.

    ``on_released(association_id)`` runs when a peer releases an association normally (an aborted
    association completes nothing); like ``on_instance`` it must be quick and must not raise."""

    def __init__(
        self,
        ingestor: Ingestor,
        *,
        ae_titles: Sequence[str],
        allowed_calling_aes: Sequence[str] = (),
        calling_ae_hosts: Mapping[str, Sequence[IPv4Network | IPv6Network]] | None = None,
        on_released: Callable[[str], None] | None = None,
    ) -> None:
        if not ae_titles:
            raise ValueError("a receiver needs at least one AE title")
        self.ingestor = ingestor
        self.journal: Journal = ingestor.journal
        self.ae_titles = tuple(a.strip() for a in ae_titles)
        self.allowed_calling_aes = frozenset(a.strip() for a in allowed_calling_aes)
        self.calling_ae_hosts = {a.strip(): tuple(n) for a, n in (calling_ae_hosts or {}).items()}
        self.on_released = on_released
        self._assocs: dict[Any, AssociationInfo] = {}  # keyed by the Association (a Thread)
        self._lock = threading.Lock()

    def evt_handlers(self) -> list[tuple[Any, ...]]:
        return [
            (evt.EVT_REQUESTED, self.handle_requested),
            (evt.EVT_ACCEPTED, self.handle_accepted),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_RELEASED, self.handle_released),
            (evt.EVT_ACSE_RECV, self.handle_acse_received),
            (evt.EVT_ABORTED, self.handle_aborted),
        ]

    # ------------------------------------------------------------------ associations

    def check_association(self, called_ae: str, calling_ae: str, address: str | None = None) -> int | None:
        """The A-ASSOCIATE-RJ reason (service-user source) for these AE titles and the peer's
        address, or None to go on. A calling AE with configured hosts is accepted only from them."""
        if called_ae.strip() not in self.ae_titles:
            return st.REJECT_CALLED_AE_NOT_RECOGNIZED
        calling = calling_ae.strip()
        if self.allowed_calling_aes and calling not in self.allowed_calling_aes:
            return st.REJECT_CALLING_AE_NOT_RECOGNIZED
        networks = self.calling_ae_hosts.get(calling)
        if networks is not None and not _address_in(address, networks):
            return st.REJECT_CALLING_AE_NOT_RECOGNIZED
        return None

    def handle_requested(self, event: Event) -> None:
        assoc = event.assoc
        called, calling = _requested_titles(assoc)
        address = _peer_address(assoc)
        reason = self.check_association(called, calling, address)
        if reason is None:
            if assoc.requestor.primitive is not None:
                prefer_our_syntaxes(assoc.requestor.primitive.presentation_context_definition_list)
            return
        what = st.rejection_text(st.REJECT_PERMANENT, st.REJECT_SOURCE_SERVICE_USER, reason)
        if reason != st.REJECT_CALLED_AE_NOT_RECOGNIZED and calling.strip() in self.calling_ae_hosts:
            what = f"{what}: not allowed from {address}"
        peer = _peer_text(assoc)
        logger.warning("rejecting association %s -> %s from %s: %s", calling, called, peer, what)
        try:
            self.journal.log_event(
                "warning", "association_rejected", f"{calling} -> {called} from {peer}: {what}"
            )
        except Exception:
            logger.exception("cannot record the rejection in the journal")
        # pynetdicom skips its own negotiation once the association is rejected
        assoc.acse.send_reject(st.REJECT_PERMANENT, st.REJECT_SOURCE_SERVICE_USER, reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def handle_accepted(self, event: Event) -> None:
        assoc = event.assoc
        called, calling = _requested_titles(assoc)
        info = AssociationInfo(uuid.uuid4().hex, called, calling, _peer_text(assoc))
        with self._lock:
            # an association normally leaves on EVT_RELEASED or EVT_ABORTED (the connection closes
            # before the latter, so EVT_CONN_CLOSE cannot be the cue); drop any that ended otherwise
            for ended in [a for a in self._assocs if not a.is_alive()]:
                del self._assocs[ended]
            # the fast path may have begun a C-STORE before this event ran (its DUL thread reads
            # while the association thread is still here): that info stays the association's
            info = self._assocs.setdefault(assoc, info)
        logger.info(
            "association %s accepted: %s -> %s from %s",
            info.association_id,
            info.calling_ae,
            info.called_ae,
            info.peer,
        )

    def association(self, assoc: Any) -> AssociationInfo:
        """The info of an accepted association (made on demand should EVT_ACCEPTED be missed)."""
        with self._lock:
            info = self._assocs.get(assoc)
        if info is None:
            called, calling = _requested_titles(assoc)
            info = AssociationInfo(uuid.uuid4().hex, called or self.ae_titles[0], calling, _peer_text(assoc))
            with self._lock:
                info = self._assocs.setdefault(assoc, info)
        return info

    def _forget(self, assoc: Any) -> AssociationInfo | None:
        with self._lock:
            return self._assocs.pop(assoc, None)

    def handle_released(self, event: Event) -> None:
        info = self._forget(event.assoc)
        if info is None:
            return
        elapsed = time.monotonic() - info.started
        logger.info(
            "association %s released by %s: %d stored, %d failed in %.1f s",
            info.association_id,
            info.calling_ae,
            info.stored,
            info.failed,
            elapsed,
            extra={
                "hop": "received",
                "association_id": info.association_id,
                "calling_ae": info.calling_ae,
                "called_ae": info.called_ae,
                "instances": info.stored,
                "ms": round(elapsed * 1000),
            },
        )
        if self.on_released is not None and info.stored:
            try:
                self.on_released(info.association_id)
            except Exception:
                logger.exception("on_released callback failed for %s", info.association_id)

    def handle_acse_received(self, event: Event) -> None:
        primitive = event.primitive  # type: ignore[attr-defined]
        if isinstance(primitive, A_ABORT | A_P_ABORT):
            with self._lock:
                info = self._assocs.get(event.assoc)
            if info is not None:
                info.abort = st.describe_abort(primitive)

    def handle_aborted(self, event: Event) -> None:
        _discard_partial_dataset(event.assoc)
        info = self._forget(event.assoc)
        if info is None:
            return
        message = (
            f"association {info.association_id} {info.calling_ae} -> {info.called_ae} from {info.peer}"
            f" aborted ({info.abort or 'by this node'}) after {info.stored} stored, {info.failed} failed"
        )
        logger.warning("%s", message)
        try:
            self.journal.log_event("warning", "association_aborted", message)
        except Exception:
            logger.exception("cannot record the abort in the journal")

    def pdu_refused(self, peer: str, reason: str) -> None:
        """The server refused a connection or the PDU guard cut one off (both have logged why);
        note it in the journal."""
        try:
            self.journal.log_event("warning", "pdu_refused", f"connection from {peer} closed: {reason}")
        except Exception:
            logger.exception("cannot record the PDU refusal in the journal")

    # ------------------------------------------------------------------ DIMSE

    def handle_echo(self, event: Event) -> int:
        return st.SUCCESS

    def handle_store(self, event: Event) -> int | Dataset:
        info = self.association(event.assoc)
        request = event.request
        transfer_syntax = str(event.context.transfer_syntax)
        origin = Origin(info.called_ae, info.calling_ae, info.association_id)
        command_uid = str(getattr(request, "AffectedSOPInstanceUID", "") or "")
        try:
            header = self._store(event, transfer_syntax, origin)
        except Exception as exc:
            return self._failure(exc, info, command_uid)
        info.stored += 1
        logger.debug(
            "stored %s (series %s) from %s", header.sop_instance_uid, header.series_uid, info.calling_ae
        )
        return st.SUCCESS

    def _store(self, event: Event, transfer_syntax: str, origin: Origin) -> InstanceHeader:
        request = cast(C_STORE, event.request)
        with open(received_path(event), "rb") as fp:
            layout = read_part10_layout(fp)  # pynetdicom's meta names the context's syntax
            header = checked_header(
                fp,
                layout.transfer_syntax,
                self.ingestor.spool.max_dataset_bytes,
                context_class=str(event.context.abstract_syntax),
                command_class=str(request.AffectedSOPClassUID or ""),
                command_instance=str(request.AffectedSOPInstanceUID or ""),
            )
            # copied kernel-side behind our own file meta; pynetdicom deletes its file afterwards
            fp.seek(layout.dataset_offset)
            self.ingestor.ingest(header, transfer_syntax, fp, origin)
        return header

    def begin_store(
        self, assoc: Any, context_class: str, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str
    ) -> StoreSink:
        """A C-STORE-RQ arrived on the receive fast path (:mod:`dicom_node.net.direct_store`): where
        its data set goes as it arrives. The sink's ``finish`` checks and files it as
        :meth:`handle_store` does and returns the answer."""
        info = self.association(assoc)

        def answer(exc: Exception) -> tuple[int, str]:
            return self.failure_answer(exc, info, sop_instance_uid)

        def stored() -> None:
            info.stored += 1

        origin = Origin(info.called_ae, info.calling_ae, info.association_id)
        command = Command(context_class, transfer_syntax, sop_class_uid, sop_instance_uid)
        return StoreSink(self.ingestor, command, origin, on_failure=answer, on_stored=stored)

    def _failure(self, exc: Exception, info: AssociationInfo, command_uid: str) -> Dataset:
        status, comment = self.failure_answer(exc, info, command_uid)
        return status_dataset(status, comment)

    def failure_answer(self, exc: Exception, info: AssociationInfo, command_uid: str) -> tuple[int, str]:
        """Log and journal a failed C-STORE; the status and Error Comment that answer it."""
        info.failed += 1
        status, level, kind = status_for(exc)
        shown = command_uid if len(command_uid) <= 70 else command_uid[:67] + "..."
        message = (
            f"C-STORE {shown!r} from {info.calling_ae} -> {info.called_ae}"
            f" ({info.association_id}): 0x{status:04X} {exc}"
        )
        if kind == "store_failed" and not isinstance(exc, StorageError):
            logger.error("%s", message, exc_info=exc)
        else:
            logger.warning("%s", message)
        try:
            self.journal.log_event(level, kind, message)
        except Exception:
            logger.exception("cannot record the C-STORE failure in the journal")
        return status, error_comment(str(exc) or type(exc).__name__)


def received_path(event: Event) -> Path:
    """The file pynetdicom streamed this C-STORE's data set into (see :mod:`dicom_node.net.switches`)."""
    path = cast(C_STORE, event.request)._dataset_path
    if not isinstance(path, Path):
        raise StorageError("pynetdicom did not stream the data set to a file (receive setting off)")
    return path


def _discard_partial_dataset(assoc: Any) -> None:
    """Delete the temp file of a data set whose association ended before it was complete: pynetdicom
    removes the file once the C-STORE handler ran, but never one abandoned half-way."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    try:
        partial.close()
        os.unlink(partial.name)
    except OSError as exc:
        logger.warning("cannot remove the partial data set %s: %s", getattr(partial, "name", "?"), exc)


def _requested_titles(assoc: Any) -> tuple[str, str]:
    """(called, calling) AE titles of an association request."""
    rq = assoc.requestor.primitive
    if rq is None:
        return "", ""
    return str(rq.called_ae_title).strip(), str(rq.calling_ae_title).strip()


def _peer_address(assoc: Any) -> str | None:
    try:
        return str(assoc.requestor.address)
    except AttributeError:
        return None


def _address_in(address: str | None, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    if not address:
        return False
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.5 on a dual-stack socket is 10.0.0.5
    return any(ip in n for n in networks)


def _peer_text(assoc: Any) -> str:
    try:
        info = assoc.requestor.address_info
        return f"{info.address}:{info.port}"
    except AttributeError:
        return "?"


# ---------------------------------------------------------------------------------------- receive mode


def require_streamed_receive() -> None:
    """Refuse to start an SCP whose data sets pynetdicom would hold in memory."""
    if not _config.STORE_RECV_CHUNKED_DATASET:
        raise RuntimeError(
            "pynetdicom would hold received data sets in memory: call "
            "dicom_node.process.configure_process() once at start-up"
        )
