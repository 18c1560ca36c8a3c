"""One requested association for C-STORE and C-ECHO on the stdlib upper layer (:mod:`dicom_node.net.ul`).

Why not pynetdicom's requestor: for a sender, its per-PDU path (primitives, queues, the DUL state
machine and two threads per association) and its start-up (it imports pydicom: ~0.3 s) cost several
times what dcmtk ``storescu`` needs for a folder. Its requestor also had a race that dropped C-STORE
responses (its association thread took them off the queue; ``tests/dicom_node/net/test_store_scu.py``
shows upstream still has it). Here one thread does everything, in order: a request goes out as a few
``sendmsg`` calls (PDU and PDV headers next to memoryviews of the data set, read from the file into a
buffer reused for the whole association), then the response is read. A-ASSOCIATE, P-DATA-TF and
release follow PS3.8; every wait has the association's timeout; a failure of any kind leaves the
association closed (aborted when the peer may still be listening) and says why in words
(:class:`AssociationError`).

DICOM TLS: the socket is wrapped with the peer's context (:attr:`dicom_node.net.peers.Peer.tls`) before
the association request; TLS sockets send one joined buffer instead of ``sendmsg``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from io import BufferedReader
from pathlib import Path

from dicom_node.errors import DeliveryError
from dicom_node.net import command_set as cs
from dicom_node.net import ul
from dicom_node.net.peers import Peer

_READ_LIMIT = 1024 * 1024  # the largest PDU we take from a peer (an A-ASSOCIATE-AC is a few kB)
_CHUNK_BYTES = 4 * 1024 * 1024  # a data set is read and sent in pieces of about this size
_IOV_MAX = 1000  # iovecs per sendmsg (the kernel takes 1024)
VERIFICATION = "1.2.840.10008.1.1"


class AssociationError(DeliveryError):
    """The association failed or is no longer usable; the message says why in words."""


class FileReadError(DeliveryError):
    """A file to send could not be read; nothing of it went out, the association is still usable."""


def connect(peer: Peer, timeout: float) -> socket.socket:
    """A TCP connection to ``peer`` with Nagle off (a request's last PDU would wait for the peer's
    delayed ACK), wrapped in TLS when the peer has a context. Raises AssociationError saying whether
    the host does not resolve, refuses, does not answer, or the TLS handshake failed."""
    host, port = peer.address
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise AssociationError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
    except UnicodeError as exc:
        raise AssociationError(f"cannot resolve host {host!r}: {exc}") from exc
    except ConnectionRefusedError as exc:
        raise AssociationError(f"connection refused by {host}:{port} (nothing listening?)") from exc
    except TimeoutError as exc:
        raise AssociationError(f"no answer from {host}:{port} within {timeout:.0f} s") from exc
    except OSError as exc:
        raise AssociationError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if peer.tls is None:
        return sock
    try:  # ssl.SSLError and ssl.CertificateError are OSErrors
        return peer.tls.wrap_socket(sock, server_hostname=host)
    except OSError as exc:
        sock.close()
        raise AssociationError(f"TLS handshake with {host}:{port} failed: {exc}") from exc


class Association:
    """An established association (build it with :meth:`request`)."""

    def __init__(
        self,
        sock: socket.socket,
        reader: ul.PduReader,
        contexts: Sequence[ul.Proposed],
        negotiated: ul.Negotiated,
        timeout: float,
    ) -> None:
        self._sock = sock
        self._reader = reader
        self._timeout = timeout
        self._message_id = 0
        self._buffer: bytearray | None = None
        self.proposed = list(contexts)
        self.negotiated = negotiated
        max_length = negotiated.max_length
        # smaller PDUs than the peer's maximum are always allowed: a data set is cut into pieces of at
        # most _CHUNK_BYTES either way
        self.fragment = _CHUNK_BYTES if max_length == 0 else min(max_length - ul.PDV_OVERHEAD, _CHUNK_BYTES)
        self.closed = False

    @classmethod
    def request(
        cls,
        peer: Peer,
        calling_ae: str,
        contexts: Sequence[tuple[str, Sequence[str]]],
        timeout: float,
    ) -> Association:
        """Connect and associate, proposing ``(abstract syntax, transfer syntaxes)`` contexts (at most
        128). Raises AssociationError: not connected, rejected (pynetdicom's words for the reason),
        aborted, no answer, or no context accepted (naming what was proposed)."""
        proposed = [ul.Proposed(2 * k + 1, a, tuple(ts)) for k, (a, ts) in enumerate(contexts)]
        if not 0 < len(proposed) <= 128:
            raise ValueError(f"{len(proposed)} presentation contexts: 1-128 per association")
        sock = connect(peer, timeout)
        reader = ul.PduReader(sock, _READ_LIMIT)
        try:
            sock.sendall(ul.associate_rq(peer.ae_title, calling_ae, proposed))
            pdu_type, body = reader.read()
            if pdu_type == ul.A_ASSOCIATE_RJ:
                raise AssociationError(f"association rejected: {_reject_words(body)}")
            if pdu_type == ul.A_ABORT:
                raise AssociationError(f"association aborted: {_abort_words(body)}")
            if pdu_type != ul.A_ASSOCIATE_AC:
                raise ul.ProtocolError(f"PDU type 0x{pdu_type:02X} in answer to the association request")
            negotiated = ul.parse_associate_ac(body)
            if negotiated.max_length and negotiated.max_length <= ul.PDV_OVERHEAD:
                raise ul.ProtocolError(f"maximum length {negotiated.max_length}")
        except ul.ProtocolError as exc:
            _abort_quietly(sock, ul.abort(2, 2))
            raise AssociationError(f"association aborted: the peer broke the protocol ({exc})") from exc
        except ul.ConnectionClosed as exc:
            sock.close()
            raise AssociationError(
                "association failed: the peer closed the connection without answering"
            ) from exc
        except TimeoutError as exc:
            _abort_quietly(sock, ul.abort())
            raise AssociationError(f"no answer to the association request within {timeout:.0f} s") from exc
        except OSError as exc:
            sock.close()
            raise AssociationError(f"association failed: connection lost ({exc.strerror or exc})") from exc
        except BaseException:
            sock.close()
            raise
        assoc = cls(sock, reader, proposed, negotiated, timeout)
        if not assoc.accepted():
            assoc.abort()
            raise AssociationError(
                f"the peer accepted no presentation context (proposed: {_proposed(proposed)})"
            )
        return assoc

    def accepted(self) -> dict[str, dict[str, int]]:
        """Accepted contexts: SOP class -> transfer syntax -> context ID (the first such context)."""
        out: dict[str, dict[str, int]] = {}
        for cx in self.proposed:
            result, syntax = self.negotiated.results.get(cx.context_id, (-1, ""))
            if result == ul.ACCEPTANCE and syntax:
                out.setdefault(cx.abstract_syntax, {}).setdefault(syntax, cx.context_id)
        return out

    def _next_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def echo(self, context_id: int) -> int:
        """C-ECHO; returns the status."""
        message_id = self._next_id()
        self._send(context_id, cs.echo_request(message_id), None)
        status, _ = self._response(message_id, cs.C_ECHO_RSP)
        return status

    def store(
        self,
        context_id: int,
        sop_class: str,
        sop_instance: str,
        data: bytes | tuple[Path, int],
    ) -> tuple[int, str]:
        """C-STORE a data set, given as bytes or as (file, offset of the data set): sent as it is.
        Returns (status, Error Comment)."""
        message_id = self._next_id()
        self._send(context_id, cs.store_request(message_id, sop_class, sop_instance), data)
        return self._response(message_id, cs.C_STORE_RSP)

    def release(self) -> None:
        """A-RELEASE: ask, wait for the answer (the peer may still send what it had queued), close."""
        if self.closed:
            return
        try:
            self._sock.sendall(ul.release_rq())
            while True:
                pdu_type, _ = self._reader.read()
                if pdu_type in (ul.A_RELEASE_RP, ul.A_ABORT):
                    break
                if pdu_type == ul.A_RELEASE_RQ:  # release collision (PS3.8 7.2.2.3): the requestor
                    self._sock.sendall(ul.release_rp())  # answers first, then waits for its answer
        except (OSError, ul.ConnectionClosed, ul.ProtocolError):
            pass
        finally:
            self._close()

    def abort(self) -> None:
        """A-ABORT (service user) and close; harmless when already closed."""
        if not self.closed:
            _abort_quietly(self._sock, ul.abort())
            self.closed = True

    def _close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    # -- one message

    def _fail(self, reason: str, pdu: bytes | None = ul.abort()) -> AssociationError:
        """Close the association (with ``pdu`` first, when the peer may still listen)."""
        if pdu is None:
            self._close()
        else:
            _abort_quietly(self._sock, pdu)
            self.closed = True
        return AssociationError(reason)

    def _send(self, context_id: int, command: bytes, data: bytes | tuple[Path, int] | None) -> None:
        """Send a command and its data set. Raises :class:`FileReadError` when the file cannot be read
        before anything of the message was sent (the association stays usable), AssociationError
        (association closed) on anything else."""
        if self.closed:
            raise AssociationError("association closed")
        parts: list[bytes | memoryview] = []
        _cut(parts, context_id, memoryview(command), self.fragment, ul.COMMAND_MORE, ul.COMMAND_LAST)
        try:
            if isinstance(data, bytes):
                _cut(parts, context_id, memoryview(data), self.fragment, ul.DATA_MORE, ul.DATA_LAST)
                self._write(parts)
            elif data is not None:
                self._send_file(parts, context_id, *data)
            else:
                self._write(parts)
        except TimeoutError as exc:
            raise self._fail(
                f"the peer took no data for {self._timeout:.0f} s (association aborted)"
            ) from exc
        except OSError as exc:
            raise self._fail(f"connection lost: {exc.strerror or exc}", None) from exc

    def _send_file(self, parts: list[bytes | memoryview], context_id: int, path: Path, offset: int) -> None:
        """The command PDUs in ``parts``, then the file's data set from ``offset``, read into the
        association's buffer piece by piece (each a whole number of fragments), each piece sent with
        as few calls as the socket takes. The command leaves only with the first piece, so a file that
        cannot be read costs the association nothing."""
        try:
            fp = path.open("rb")
        except OSError as exc:
            raise FileReadError(f"cannot read: {exc.strerror or exc}") from exc
        with fp:
            try:
                remaining = fp.seek(0, 2) - offset
                fp.seek(offset)
            except OSError as exc:
                raise FileReadError(f"cannot read: {exc.strerror or exc}") from exc
            sent_any = False
            try:
                per_chunk = max(1, _CHUNK_BYTES // self.fragment) * self.fragment
                if remaining <= 0:
                    parts.append(ul.pdv_header(context_id, ul.DATA_LAST, 0))
                    self._write(parts)
                    return
                if self._buffer is None or len(self._buffer) < min(per_chunk, remaining):
                    self._buffer = bytearray(min(per_chunk, remaining))
                view = memoryview(self._buffer)
                while remaining > 0:
                    want = min(len(view), remaining)
                    got = _read_into(fp, view[:want])
                    remaining -= got
                    last = ul.DATA_LAST if remaining == 0 else ul.DATA_MORE
                    _cut(parts, context_id, view[:got], self.fragment, ul.DATA_MORE, last)
                    sent_any = True
                    self._write(parts)
                    parts.clear()
            except FileReadError as exc:
                if not sent_any:
                    raise
                raise self._fail(f"{exc} (in the middle of sending it; association aborted)") from exc

    def _write(self, parts: list[bytes | memoryview]) -> None:
        sock = self._sock
        if type(sock) is not socket.socket:  # TLS (ssl.SSLSocket): no sendmsg
            sock.sendall(b"".join(parts))
            return
        for start in range(0, len(parts), _IOV_MAX):
            views = [memoryview(p) for p in parts[start : start + _IOV_MAX]]
            while views:
                sent = sock.sendmsg(views)
                done = 0
                while done < len(views) and sent >= len(views[done]):
                    sent -= len(views[done])
                    done += 1
                views = views[done:]
                if views and sent:
                    views[0] = views[0][sent:]

    def _response(self, message_id: int, command_field: int) -> tuple[int, str]:
        """Wait for the response to ``message_id``: (status, Error Comment)."""
        fragments: list[bytes] = []
        while True:
            try:
                pdu_type, body = self._reader.read()
            except TimeoutError as exc:
                raise self._fail(f"no response within {self._timeout:.0f} s (association aborted)") from exc
            except ul.ConnectionClosed as exc:
                raise self._fail("the peer closed the connection", None) from exc
            except ul.ProtocolError as exc:
                raise self._fail(
                    f"the peer broke the protocol ({exc}); association aborted", ul.abort(2, 6)
                ) from exc
            except OSError as exc:
                raise self._fail(f"connection lost: {exc.strerror or exc}", None) from exc
            if pdu_type == ul.A_ABORT:
                raise self._fail(f"association aborted: {_abort_words(body)}", None)
            if pdu_type == ul.A_RELEASE_RQ:
                _abort_quietly(self._sock, ul.release_rp())
                raise self._fail("the peer released the association before answering", None)
            if pdu_type != ul.P_DATA_TF:
                raise self._fail(f"unexpected PDU type 0x{pdu_type:02X}; association aborted", ul.abort(2, 2))
            try:
                for _context_id, control, fragment in ul.pdvs(body):
                    if not control & 0x01:
                        continue  # a data set fragment: no response we wait for has one
                    fragments.append(fragment)
                    if control & 0x02:
                        command = cs.decode(b"".join(fragments))
                        fragments.clear()
                        if (
                            cs.get_us(command, cs.COMMAND_FIELD) == command_field
                            and cs.get_us(command, cs.MESSAGE_ID_RESPONDED_TO) == message_id
                        ):
                            status = cs.get_us(command, cs.STATUS)
                            if status is None:
                                raise cs.CommandSetError("a response without a Status (0000,0900)")
                            return status, cs.get_text(command, cs.ERROR_COMMENT)
                        raise cs.CommandSetError(
                            f"command 0x{cs.get_us(command, cs.COMMAND_FIELD) or 0:04X} while waiting for "
                            f"the response to message {message_id}"
                        )
            except (ul.ProtocolError, cs.CommandSetError) as exc:
                raise self._fail(
                    f"the peer broke the protocol ({exc}); association aborted", ul.abort(2, 6)
                ) from exc


def _cut(
    parts: list[bytes | memoryview], context_id: int, data: memoryview, size: int, more: int, last: int
) -> None:
    """Append the PDUs carrying ``data`` in fragments of at most ``size`` bytes (one PDV per PDU);
    the final fragment gets the control header ``last``."""
    total = len(data)
    if total == 0:
        parts.append(ul.pdv_header(context_id, last, 0))
        return
    for start in range(0, total, size):
        piece = data[start : start + size]
        parts.append(ul.pdv_header(context_id, last if start + size >= total else more, len(piece)))
        parts.append(piece)


def _read_into(fp: BufferedReader, view: memoryview) -> int:
    """Fill ``view`` from ``fp``; FileReadError when the file cannot be read or is shorter than it was."""
    try:
        got = fp.readinto(view)
    except OSError as exc:
        raise FileReadError(f"cannot read: {exc.strerror or exc}") from exc
    if got != len(view):
        raise FileReadError(f"the file changed while being sent ({got} of {len(view)} bytes read)")
    return got


def _abort_quietly(sock: socket.socket, pdu: bytes) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(pdu)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def _reject_words(body: bytes) -> str:
    from dicom_node.net.dimse_status import rejection_text

    result, source, reason = ul.parse_reject(body)
    try:
        return rejection_text(result, source, reason)
    except (ValueError, KeyError):  # values PS3.8 does not define
        return f"result {result}, source {source}, reason {reason}"


def _abort_words(body: bytes) -> str:
    from dicom_node.net.dimse_status import abort_text

    try:
        return abort_text(*ul.parse_abort(body))
    except ul.ProtocolError:
        return "(malformed A-ABORT)"


def uid_name(uid: str) -> str:
    """``"CT Image Storage (1.2.840.10008.5.1.4.1.1.2)"``, or the UID alone when pydicom does not
    know it. Imports pydicom: for failure messages only."""
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


def _proposed(contexts: Sequence[ul.Proposed]) -> str:
    return "; ".join(
        f"{uid_name(cx.abstract_syntax)} in {', '.join(uid_name(t) for t in cx.transfer_syntaxes)}"
        for cx in contexts
    )
