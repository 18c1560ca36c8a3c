"""C-ECHO and C-STORE as a service user: used by ``dicom-node echo`` / ``send`` and by the sender.

Files are sent as they are, in their own transfer syntax, without decoding: the presentation contexts
proposed are exactly the (SOP class, transfer syntax) pairs of the files, and pynetdicom streams each
file's data set bytes from disk (its chunked-send mode, switched on once at start-up by
:func:`use_raw_file_sending`).
Before the association only each file's meta group is read. A peer may
take at most 128 presentation contexts per association, so more pairs than that are sent over several
associations, one after the other.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.errors import CannotUnderstandError, DeliveryError, InvalidUIDError
from dicom_node.net.dimse_status import describe_abort, describe_rejection, is_stored
from dicom_node.net.peers import Peer
from dicom_node.storage.header import read_part10_layout

logger = logging.getLogger(__name__)

MAX_CONTEXTS = 128


class SendResult(NamedTuple):
    """Outcome of one file: the peer's status, or None with ``error`` when it was not sent or no
    response came."""

    path: Path
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Stored: success, or a warning (stored with changes)."""
        return self.status is not None and is_stored(self.status)


@dataclass(frozen=True)
class _Planned:
    path: Path
    sop_class: str
    transfer_syntax: str


def use_raw_file_sending() -> None:
    """Make pynetdicom send files given by path as their raw data set bytes, in the file's own
    transfer syntax. pynetdicom keeps this switch module-wide, so it is set once at start-up
    (:func:`dicom_node.process.configure_process`), never per send."""
    _config.STORE_SEND_CHUNKED_DATASET = True


def _require_raw_file_sending() -> None:
    if not _config.STORE_SEND_CHUNKED_DATASET:
        raise RuntimeError(
            "pynetdicom would decode and re-encode the files: call "
            "dicom_node.process.configure_process() once at start-up"
        )


def iter_files(paths: Iterable[Path]) -> list[Path]:
    """Files named and files under named folders (recursive, sorted, hidden entries skipped)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            out.append(path)
    return out


def _make_ae(calling_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


class _Link(NamedTuple):
    """An association and what the peer's A-(P-)ABORT said, should one arrive."""

    assoc: Association
    abort: list[str]

    def failure(self) -> str:
        """Why the association is not (or no longer) usable, in pynetdicom's words."""
        assoc = self.assoc
        if assoc.is_rejected:
            rj = assoc.acceptor.primitive
            if rj is not None:
                return f"association rejected: {describe_rejection(rj)}"
            return "association rejected"
        if assoc.is_aborted:
            if self.abort:
                return f"association aborted: {self.abort[-1]}"
            # pynetdicom also reports a refused or failed connection as aborted
            return "association aborted (or connection refused)"
        return "no association (peer unreachable or not answering)"


def _associate(ae: AE, peer: Peer) -> _Link:
    """Associate and switch Nagle's algorithm off on the connection: pynetdicom writes a C-STORE
    as separate PDUs (command, then data set), and with Nagle the second waits ~40 ms for the
    peer's delayed ACK - 50 ms per small instance instead of a few."""
    aborts: list[str] = []

    def on_acse(event: Event) -> None:
        primitive = event.primitive  # type: ignore[attr-defined]
        if isinstance(primitive, A_ABORT | A_P_ABORT):
            aborts.append(describe_abort(primitive))

    tls_args = None if peer.tls is None else (peer.tls, peer.address[0])
    assoc = ae.associate(
        *peer.address,
        ae_title=peer.ae_title,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_ACSE_RECV, on_acse)],
    )
    sock = assoc.dul.socket.socket if assoc.is_established and assoc.dul.socket is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _Link(assoc, aborts)


def echo(peer: Peer, calling_ae: str = "DICOMNODE", timeout: float = 30.0) -> int:
    """C-ECHO ``peer``; returns the response status. Raises DeliveryError if no association or no
    response."""
    ae = _make_ae(calling_ae, timeout)
    ae.add_requested_context(Verification)
    link = _associate(ae, peer)
    assoc = link.assoc
    if not assoc.is_established:
        raise DeliveryError(f"C-ECHO to {peer}: {link.failure()}")
    try:
        rsp = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if "Status" not in rsp:
        raise DeliveryError(f"C-ECHO to {peer}: no response ({link.failure()})")
    return int(rsp.Status)


def _plan(path: Path) -> _Planned:
    """Read a file's meta group: the SOP class and transfer syntax it is sent with (the command
    carries the meta's Media Storage SOP Class/Instance UIDs, the data set goes as stored)."""
    try:
        with path.open("rb") as fp:
            layout = read_part10_layout(fp)
    except OSError as exc:
        raise CannotUnderstandError(f"cannot read: {exc.strerror or exc}") from exc
    meta_class = str(layout.file_meta.get("MediaStorageSOPClassUID", "") or "")
    meta_instance = str(layout.file_meta.get("MediaStorageSOPInstanceUID", "") or "")
    if not meta_class or not meta_instance:
        raise CannotUnderstandError("file meta lacks Media Storage SOP Class/Instance UID")
    return _Planned(path, meta_class, layout.transfer_syntax)


def send_files(
    paths: Sequence[Path],
    peer: Peer,
    calling_ae: str = "DICOMNODE",
    *,
    timeout: float = 30.0,
    on_result: Callable[[SendResult], None] | None = None,
) -> list[SendResult]:
    """C-STORE files to ``peer``, one association per up-to-128 (SOP class, transfer syntax) pairs.

    Returns one result per path, in the order given; ``on_result`` sees each as it is known.
    Unreadable files are reported and skipped; a failed association fails its files.
    Needs :func:`use_raw_file_sending` to have been called (at start-up)."""
    _require_raw_file_sending()
    results: dict[int, SendResult] = {}

    def done(index: int, result: SendResult) -> None:
        results[index] = result
        if on_result is not None:
            on_result(result)

    planned: list[tuple[int, _Planned]] = []
    for index, path in enumerate(paths):
        try:
            planned.append((index, _plan(Path(path))))
        except (CannotUnderstandError, InvalidUIDError) as exc:
            done(index, SendResult(Path(path), None, f"not sent: {exc}"))

    for batch in _batches(planned):
        _send_batch(batch, peer, calling_ae, timeout, done)
    return [results[i] for i in range(len(paths))]


def _batches(planned: list[tuple[int, _Planned]]) -> list[list[tuple[int, _Planned]]]:
    """Group files so that each group needs at most MAX_CONTEXTS contexts (file order kept within)."""
    groups: list[list[tuple[int, _Planned]]] = []
    current: list[tuple[int, _Planned]] = []
    pairs: set[tuple[str, str]] = set()
    for item in planned:
        pair = (item[1].sop_class, item[1].transfer_syntax)
        if pair not in pairs and len(pairs) == MAX_CONTEXTS:
            groups.append(current)
            current, pairs = [], set()
        pairs.add(pair)
        current.append(item)
    if current:
        groups.append(current)
    return groups


def _send_batch(
    batch: list[tuple[int, _Planned]],
    peer: Peer,
    calling_ae: str,
    timeout: float,
    done: Callable[[int, SendResult], None],
) -> None:
    ae = _make_ae(calling_ae, timeout)
    for sop_class, syntax in sorted({(p.sop_class, p.transfer_syntax) for _, p in batch}):
        ae.add_requested_context(sop_class, syntax)
    link = _associate(ae, peer)
    assoc = link.assoc
    if not assoc.is_established:
        reason = link.failure()
        for index, item in batch:
            done(index, SendResult(item.path, None, reason))
        return
    try:
        for index, item in batch:
            if not assoc.is_established:
                done(index, SendResult(item.path, None, link.failure()))
                continue
            try:
                rsp = assoc.send_c_store(item.path)
            except ValueError as exc:  # e.g. the peer accepted no context for this pair
                done(index, SendResult(item.path, None, f"not sent: {exc}"))
                continue
            if "Status" in rsp:
                status = int(rsp.Status)
                comment = str(rsp.get("ErrorComment", "") or "")
                done(index, SendResult(item.path, status, comment))
            else:
                done(index, SendResult(item.path, None, f"no response: {link.failure()}"))
    finally:
        if assoc.is_established:
            assoc.release()
