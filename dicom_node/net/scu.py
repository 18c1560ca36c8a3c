"""C-ECHO and C-STORE as a service user: used by ``dicom-node echo`` / ``send`` and by the sender.

Files are sent as they are, in their own transfer syntax, without decoding: the presentation contexts
proposed are exactly the (SOP class, transfer syntax) pairs of the files, and pynetdicom streams each
file's data set bytes from disk (its chunked-send mode, switched on once at start-up by
:func:`use_raw_file_sending`).
Before the association only each file's meta group is read. A peer may
take at most 128 presentation contexts per association, so more pairs than that are sent over several
associations, one after the other.

Each SOP class with a file in another syntax (compressed, deflated, big endian) is also proposed once
with the uncompressed little endian syntaxes. A file goes as it is whenever the peer accepted its own
pair; only when the peer accepted none for it is it transcoded (decoded, sent uncompressed), with a
warning naming the file, the syntaxes and the peer. When not even that was accepted, the file fails
with its SOP class, its syntax and what the peer accepted, in words.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.errors import CannotUnderstandError, DeliveryError, InvalidUIDError
from dicom_node.net.dimse_status import describe_abort, describe_rejection, is_stored
from dicom_node.net.peers import Peer
from dicom_node.net.scu_fastpath import SendingAE
from dicom_node.storage.header import read_part10_layout

logger = logging.getLogger(__name__)

MAX_CONTEXTS = 128
FALLBACK_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class SendResult(NamedTuple):
    """Outcome of one file: the peer's status, or None with ``error`` when it was not sent or no
    response came."""

    path: Path
    status: int | None
    error: str = ""
    skipped: bool = False  # not an instance to send (DICOMDIR, not a DICOM file): no failure

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
    ae = SendingAE(ae_title=calling_ae)
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
        """Why the association is not (or no longer) usable, in words: rejected (pynetdicom's
        reason text), no presentation context accepted (naming them), aborted (the peer's words)."""
        assoc = self.assoc
        if assoc.is_rejected:
            rj = assoc.acceptor.primitive
            if rj is not None:
                return f"association rejected: {describe_rejection(rj)}"
            return "association rejected"
        rejected = list(assoc.rejected_contexts)
        if rejected and not assoc.accepted_contexts:
            proposed = "; ".join(
                f"{_name(str(cx.abstract_syntax))} in {', '.join(_name(str(t)) for t in cx.transfer_syntax)}"
                for cx in rejected
            )
            return f"the peer accepted no presentation context (proposed: {proposed})"
        if assoc.is_aborted:
            if self.abort:
                return f"association aborted: {self.abort[-1]}"
            return "association aborted"
        return "no association (peer not answering)"


def _connection_problem(peer: Peer, timeout: float = 5.0) -> str:
    """What a plain TCP connection to the peer says (empty when it connects)."""
    host, port = peer.address
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror or exc}"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (nothing listening?)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:.0f} s"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


def _associate(ae: AE, peer: Peer) -> _Link:
    """Associate and switch Nagle's algorithm off on the connection: pynetdicom writes a C-STORE
    as separate PDUs (command, then data set), and with Nagle the second waits ~40 ms for the
    peer's delayed ACK - 50 ms per small instance instead of a few. Raises DeliveryError when the
    peer's host name does not resolve or no TCP connection could be made (saying which)."""
    host, port = peer.address
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DeliveryError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
    except UnicodeError as exc:
        raise DeliveryError(f"cannot resolve host {host!r}: {exc}") from exc
    aborts: list[str] = []
    connected: list[bool] = []

    def on_acse(event: Event) -> None:
        primitive = event.primitive  # type: ignore[attr-defined]
        if isinstance(primitive, A_ABORT | A_P_ABORT):
            aborts.append(describe_abort(primitive))

    tls_args = None if peer.tls is None else (peer.tls, peer.address[0])
    assoc = ae.associate(
        host,
        port,
        ae_title=peer.ae_title,
        tls_args=tls_args,
        evt_handlers=[
            (evt.EVT_ACSE_RECV, on_acse),
            (evt.EVT_CONN_OPEN, lambda _: connected.append(True)),
        ],
    )
    if not connected and not assoc.is_established:
        # pynetdicom only logs why; a second try says it (made only when nothing connected)
        raise DeliveryError(_connection_problem(peer) or "cannot connect")
    sock = assoc.dul.socket.socket if assoc.is_established and assoc.dul.socket is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _Link(assoc, aborts)


def echo(peer: Peer, calling_ae: str = "DICOMNODE", timeout: float = 30.0) -> int:
    """C-ECHO ``peer``; returns the response status. Raises DeliveryError if no association or no
    response."""
    ae = _make_ae(calling_ae, timeout)
    ae.add_requested_context(Verification)
    try:
        link = _associate(ae, peer)
    except DeliveryError as exc:
        raise DeliveryError(f"C-ECHO to {peer}: {exc}") from exc
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


class _Stopped(Exception):
    """Sending was interrupted in another thread."""


class _NotAnInstance(Exception):
    """A file that holds no instance to send: a DICOMDIR, or not a DICOM Part 10 file."""


DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage


def _plan(path: Path) -> _Planned:
    """Read a file's meta group: the SOP class and transfer syntax it is sent with (the command
    carries the meta's Media Storage SOP Class/Instance UIDs, the data set goes as stored)."""
    try:
        with path.open("rb") as fp:
            if fp.read(132)[128:] != b"DICM":
                raise _NotAnInstance("not a DICOM file")
            fp.seek(0)
            layout = read_part10_layout(fp)
    except OSError as exc:
        raise CannotUnderstandError(f"cannot read: {exc.strerror or exc}") from exc
    if str(layout.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
        raise _NotAnInstance("a DICOMDIR")
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
    associations: int = 1,
) -> list[SendResult]:
    """C-STORE files to ``peer``, one association per up-to-128 (SOP class, transfer syntax) pairs.

    Returns one result per path, in the order given; ``on_result`` sees each as it is known (one call
    at a time). DICOMDIRs and files that are not DICOM are skipped (``skipped``); unreadable DICOM
    files fail; a failed association fails its files. With ``associations`` > 1 the files are cut in
    that many consecutive parts sent at the same time over their own associations (pynetdicom waits
    for each response; parallel associations hide that round trip). An exception in the calling
    thread (Ctrl-C) aborts every association and is raised again.
    Needs :func:`use_raw_file_sending` to have been called (at start-up)."""
    _require_raw_file_sending()
    results: dict[int, SendResult] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def done(index: int, result: SendResult) -> None:
        with lock:
            results[index] = result
            if on_result is not None:
                on_result(result)

    planned: list[tuple[int, _Planned]] = []
    for index, path in enumerate(paths):
        try:
            planned.append((index, _plan(Path(path))))
        except _NotAnInstance as exc:
            done(index, SendResult(Path(path), None, f"skipped: {exc}", skipped=True))
        except (CannotUnderstandError, InvalidUIDError) as exc:
            done(index, SendResult(Path(path), None, f"not sent: {exc}"))

    def send_part(part: list[tuple[int, _Planned]]) -> None:
        for batch in _batches(part):
            if stop.is_set():
                return
            _send_batch(batch, peer, calling_ae, timeout, done, stop)

    parts = _split(planned, max(1, associations))
    if len(parts) <= 1:
        send_part(planned)
    else:
        threads = [
            threading.Thread(target=send_part, args=(part,), name=f"send-{k}") for k, part in enumerate(parts)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # a plain join() would not let Ctrl-C in
        except BaseException:
            stop.set()
            for thread in threads:
                thread.join()
            raise
    return [results[i] for i in range(len(paths))]


def _split(planned: list[tuple[int, _Planned]], n: int) -> list[list[tuple[int, _Planned]]]:
    """``n`` consecutive parts of nearly equal size (fewer when there are fewer files)."""
    n = min(n, len(planned))
    if n <= 1:
        return [planned]
    size, extra = divmod(len(planned), n)
    parts, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        parts.append(planned[start:end])
        start = end
    return parts


def _batches(planned: list[tuple[int, _Planned]]) -> list[list[tuple[int, _Planned]]]:
    """Group files so that each group needs at most MAX_CONTEXTS contexts (one per pair plus one
    uncompressed fallback per SOP class; file order kept within)."""
    groups: list[list[tuple[int, _Planned]]] = []
    current: list[tuple[int, _Planned]] = []
    pairs: set[tuple[str, str]] = set()
    classes: set[str] = set()
    for item in planned:
        pair = (item[1].sop_class, item[1].transfer_syntax)
        fallback = {pair[0]} if pair[1] not in FALLBACK_SYNTAXES else set()
        if current and len(pairs | {pair}) + len(classes | fallback) > MAX_CONTEXTS:
            groups.append(current)
            current, pairs, classes = [], set(), set()
        pairs.add(pair)
        classes |= fallback
        current.append(item)
    if current:
        groups.append(current)
    return groups


def _needing_fallback(planned: Iterable[_Planned]) -> set[str]:
    """SOP classes with a file in a syntax other than the uncompressed little endian ones."""
    return {p.sop_class for p in planned if p.transfer_syntax not in FALLBACK_SYNTAXES}


def _name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


def _accepted(assoc: Association) -> dict[str, set[str]]:
    """Accepted transfer syntaxes by SOP class."""
    out: dict[str, set[str]] = {}
    for cx in assoc.accepted_contexts:
        out.setdefault(str(cx.abstract_syntax), set()).update(str(ts) for ts in cx.transfer_syntax)
    return out


def _transcoded(item: _Planned, peer: Peer) -> Dataset:
    """The file decoded for sending uncompressed (pynetdicom encodes it in the accepted syntax)."""
    ds = dcmread(item.path)
    if UID(item.transfer_syntax).is_compressed:
        ds.decompress()
    logger.warning(
        "%s: %s accepts no context for %s in %s; sending it transcoded to an uncompressed syntax",
        item.path.name,
        peer,
        _name(item.sop_class),
        _name(item.transfer_syntax),
    )
    return ds


def _send_batch(
    batch: list[tuple[int, _Planned]],
    peer: Peer,
    calling_ae: str,
    timeout: float,
    done: Callable[[int, SendResult], None],
    stop: threading.Event | None = None,
) -> None:
    ae = _make_ae(calling_ae, timeout)
    for sop_class, syntax in sorted({(p.sop_class, p.transfer_syntax) for _, p in batch}):
        ae.add_requested_context(sop_class, syntax)
    for sop_class in sorted(_needing_fallback([p for _, p in batch])):
        ae.add_requested_context(sop_class, list(FALLBACK_SYNTAXES))
    try:
        link = _associate(ae, peer)
    except DeliveryError as exc:
        for index, item in batch:
            done(index, SendResult(item.path, None, str(exc)))
        return
    assoc = link.assoc
    if not assoc.is_established:
        reason = link.failure()
        for index, item in batch:
            done(index, SendResult(item.path, None, reason))
        return
    accepted = _accepted(assoc)
    try:
        for index, item in batch:
            if stop is not None and stop.is_set():
                raise _Stopped
            if not assoc.is_established:
                done(index, SendResult(item.path, None, link.failure()))
                continue
            syntaxes = accepted.get(item.sop_class, set())
            try:
                if item.transfer_syntax in syntaxes:
                    rsp = assoc.send_c_store(item.path)
                elif syntaxes & set(FALLBACK_SYNTAXES):
                    rsp = assoc.send_c_store(_transcoded(item, peer))
                else:
                    offered = ", ".join(sorted(_name(t) for t in syntaxes)) or "none"
                    done(
                        index,
                        SendResult(
                            item.path,
                            None,
                            f"no accepted presentation context for {_name(item.sop_class)} in"
                            f" {_name(item.transfer_syntax)} or uncompressed (peer accepted: {offered})",
                        ),
                    )
                    continue
            except (ValueError, NotImplementedError, RuntimeError, AttributeError) as exc:
                # the peer's contexts did not fit after all, or the file cannot be decoded here
                done(index, SendResult(item.path, None, f"not sent: {exc}"))
                continue
            if "Status" in rsp:
                status = int(rsp.Status)
                comment = str(rsp.get("ErrorComment", "") or "")
                done(index, SendResult(item.path, status, comment))
            else:
                done(index, SendResult(item.path, None, f"no response: {link.failure()}"))
    except _Stopped:  # another thread was interrupted: end this association too
        if assoc.is_established:
            assoc.abort()
        return
    except BaseException:  # Ctrl-C or worse: do not wait for the peer, end the association now
        if assoc.is_established:
            assoc.abort()
        raise
    if assoc.is_established:
        assoc.release()
