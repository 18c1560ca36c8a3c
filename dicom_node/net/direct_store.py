"""The receive fast path's P-DATA reader: a C-STORE data set goes from the socket into its spool temp
file, fragment by fragment, without pynetdicom's PDU, primitive and message objects.

pynetdicom 3.0.4 reads each P-DATA-TF PDU whole into memory, copies it into ``bytes``, decodes it into
PDV objects, hands them to its DIMSE provider as a primitive, which appends each fragment to a temp
file whose file meta it writes with pydicom; the association thread then decodes the command set
with pydicom and calls the C-STORE handler, which reads that file again and copies it behind our own
file meta into the spool. That is ~2.5 ms of Python per CT image.

:class:`PDataReader` (used by :class:`dicom_node.net.fastpath.WakingDUL` in the data transfer state,
for each P-DATA-TF PDU) follows the PDV items as they come off the socket, reading as many bytes of the
PDU body per ``recv_into`` as the kernel has (an item's header comes with the data around it):

- command fragments are collected; the complete command set is decoded with
  :mod:`dicom_node.net.command_set`;
- a C-STORE-RQ with a data set, on an accepted context, opens a sink
  (:meth:`dicom_node.net.receive.Receiver.begin_store`: the spool temp file with our file meta
  written first, since the command names the SOP UIDs and the context the transfer syntax); its data
  fragments are read into one reused buffer and written to the sink as they arrive; after the last
  one the sink checks and files the instance (header parsed, UIDs matched, fsync, rename, journal)
  and the C-STORE-RSP is sent at once, encoded directly;
- every other message (C-ECHO, anything unexpected) is handed to pynetdicom's DIMSE provider as the
  P-DATA primitives pynetdicom would have made, so pynetdicom serves it (or refuses it) as before.

Upstream, this would be a streaming C-STORE service in pynetdicom: the DIMSE provider handing each
data fragment, as its PDV is read, to a writer the C-STORE handler supplies once the command set is
decoded (instead of assembling the message and then calling ``EVT_C_STORE``), with command sets
decoded without pydicom. ``tests/dicom_node/net/test_direct_store.py`` guards this module.

The PDU guard still sees every byte (the reader reads through the guarded socket). If the
association ends before the last fragment, the sink's temp file is deleted. Nothing is answered
before the instance's bytes and its journal row are safe: ``finish`` returns only then.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Protocol

from pynetdicom.pdu_primitives import P_DATA

from dicom_node.net import command_set as cs

logger = logging.getLogger(__name__)

_PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context id, message control header
_PDU_HEADER = struct.Struct(">BBI")
_COMMAND = 0x01
_LAST = 0x02
_CHUNK = 256 * 1024  # most bytes read per recv_into while streaming a fragment


class Sink(Protocol):
    """Where one data set goes (see :class:`dicom_node.net.receive.StoreSink`)."""

    def write(self, fragment: memoryview) -> None: ...

    def finish(self) -> tuple[int, str]: ...

    def discard(self) -> None: ...


class StoreTarget(Protocol):
    """What the fast path files C-STORE data sets through (the :class:`Receiver`)."""

    def begin_store(
        self, assoc: Any, context_class: str, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str
    ) -> Sink:
        """A sink for a C-STORE-RQ's data set; ``context_class`` is the abstract syntax of the
        context it came on (a different SOP class is refused once the data set was read)."""


class ConnectionEnded(Exception):
    """The peer closed the connection (or the PDU guard cut it off) inside a PDU."""


class MalformedPData(Exception):
    """A P-DATA-TF body whose PDV items do not add up."""


class PDataReader:
    """Reads the P-DATA-TF PDUs of one association (one instance per DUL, used from its thread)."""

    def __init__(self, dul: Any, target: StoreTarget) -> None:
        self.dul = dul
        self.target = target
        self._buffer = bytearray(_CHUNK)
        self._view = memoryview(self._buffer)
        self._left = 0  # of the current P-DATA-TF body, not read from the socket yet
        self._start = self._end = 0  # the buffer's unconsumed bytes
        self._command = bytearray()
        self._command_pdvs: list[tuple[int, bytes]] = []
        self._passing = False  # the current message's data set goes to pynetdicom
        self._sink: Sink | None = None
        # (SOP class, SOP instance, transfer syntax, message id, context id) of the C-STORE being received
        self._answer: tuple[str, str, str, int, int] | None = None

    # ------------------------------------------------------------------ reading

    def read_pdu(self, length: int) -> None:
        """Consume one P-DATA-TF body of ``length`` bytes (its header was read). Raises
        ConnectionEnded or MalformedPData.

        The body is read in as few ``recv_into`` calls as the kernel allows (a PDV item's header
        comes in the same read as the data before and after it); a data fragment bound for a sink is
        written from the buffer as it is read, never assembled."""
        self._left = length  # bytes of this body not read from the socket yet
        self._start = self._end = 0  # unconsumed bytes in the buffer
        while self._left or self._end > self._start:
            self._fill(_PDV_HEADER.size, "a PDV item")
            item_length, context_id, control = _PDV_HEADER.unpack_from(self._buffer, self._start)
            self._start += _PDV_HEADER.size
            size = item_length - 2
            if item_length < 2 or size > self._left + self._end - self._start:
                raise MalformedPData(f"PDV item length {item_length} does not fit its P-DATA-TF")
            if control & _COMMAND:
                self._command_fragment(context_id, control, self._take(size))
            elif self._sink is not None:
                self._stream(size)
                if control & _LAST:
                    self._finish_store(context_id)
            else:
                self._pass(context_id, control, self._take(size))
                if control & _LAST:
                    self._passing = False

    @property
    def in_message(self) -> bool:
        """Whether a message has begun and not ended (more of its fragments are due)."""
        return self._sink is not None or bool(self._command) or self._passing

    def _fill(self, need: int, what: str) -> None:
        """Have at least ``need`` unconsumed bytes in the buffer (``need`` <= :data:`_CHUNK`)."""
        have = self._end - self._start
        if have >= need:
            return
        if have + self._left < need:
            raise MalformedPData(f"{have + self._left} bytes left in a P-DATA-TF, too few for {what}")
        if self._start:  # move the rest to the front
            self._buffer[:have] = self._buffer[self._start : self._end]
            self._start, self._end = 0, have
        sock = self.dul.socket.socket
        while self._end - self._start < need:
            n = sock.recv_into(self._view[self._end :], min(self._left, _CHUNK - self._end))
            if not n:
                raise ConnectionEnded
            self._end += n
            self._left -= n

    def _take(self, size: int) -> bytes:
        """The next ``size`` bytes of the body (a command fragment, or a data set for pynetdicom)."""
        have = self._end - self._start
        if size <= have:
            value = bytes(self._view[self._start : self._start + size])
            self._start += size
            return value
        out = bytearray(self._view[self._start : self._end])
        self._start = self._end = 0
        sock = self.dul.socket.socket
        while len(out) < size:
            n = sock.recv_into(self._view, min(size - len(out), _CHUNK))
            if not n:
                raise ConnectionEnded
            self._left -= n
            out += self._view[:n]
        return bytes(out)

    def _stream(self, size: int) -> None:
        """Write a data fragment of ``size`` bytes to the sink: what is buffered, then the rest as it
        is read (the buffer is empty after that)."""
        sink = self._sink
        assert sink is not None
        have = min(size, self._end - self._start)
        if have:
            sink.write(self._view[self._start : self._start + have])
            self._start += have
            size -= have
        if not size:
            return
        self._start = self._end = 0
        sock = self.dul.socket.socket
        view = self._view
        while size:
            n = sock.recv_into(view, size if size < _CHUNK else _CHUNK)
            if not n:
                raise ConnectionEnded
            self._left -= n
            sink.write(view[:n])
            size -= n

    # ------------------------------------------------------------------ messages

    def _command_fragment(self, context_id: int, control: int, value: bytes) -> None:
        if self._sink is not None:
            # a new message before the last fragment of a data set (PS3.8 forbids it): the
            # unfinished instance is dropped, never answered; pynetdicom gets the new message
            logger.warning(
                "association %s: a new command arrived inside the data set of C-STORE %s; that"
                " instance is dropped",
                getattr(self.dul.assoc, "name", "?"),
                self._answer[1] if self._answer else "?",
            )
            self._drop_sink()
            self._passing = True
        if self._passing:
            self._pass(context_id, control, value)
            return
        self._command += value
        self._command_pdvs.append((context_id, bytes([control]) + value))
        if control & _LAST:
            self._command_done(context_id)

    def _command_done(self, context_id: int) -> None:
        raw, pdvs = bytes(self._command), self._command_pdvs
        self._command, self._command_pdvs = bytearray(), []
        sink = self._store_sink(raw, context_id)
        if sink is not None:
            self._sink = sink
            return
        # not ours: pynetdicom gets the command, and the data set if one follows
        for cid, pdv in pdvs:
            self._pass_pdv(cid, pdv)
        try:
            self._passing = cs.has_data_set(cs.decode(raw))
        except cs.CommandSetError:
            self._passing = False  # pynetdicom has refused it already

    def _store_sink(self, raw: bytes, context_id: int) -> Sink | None:
        """A sink when the command is a C-STORE-RQ with a data set on an accepted context."""
        try:
            command = cs.decode(raw)
            if cs.get_us(command, cs.COMMAND_FIELD) != cs.C_STORE_RQ or not cs.has_data_set(command):
                return None
            message_id = cs.get_us(command, cs.MESSAGE_ID)
        except cs.CommandSetError:
            return None
        context = self.dul.assoc._accepted_cx.get(context_id)
        if context is None or message_id is None or not context.transfer_syntax:
            return None
        sop_class = cs.get_text(command, cs.AFFECTED_SOP_CLASS)
        sop_instance = cs.get_text(command, cs.AFFECTED_SOP_INSTANCE)
        transfer_syntax = str(context.transfer_syntax[0])
        self._answer = (sop_class, sop_instance, transfer_syntax, message_id, context_id)
        context_class = str(context.abstract_syntax)
        return self.target.begin_store(
            self.dul.assoc, context_class, transfer_syntax, sop_class, sop_instance
        )

    def _finish_store(self, context_id: int) -> None:
        sink, self._sink = self._sink, None
        answer, self._answer = self._answer, None
        assert sink is not None and answer is not None
        sop_class, sop_instance, _, message_id, command_context = answer
        status, comment = sink.finish()
        rsp = cs.store_response(message_id, sop_class, sop_instance, status, comment)
        pdv = _PDV_HEADER.pack(len(rsp) + 2, command_context, _COMMAND | _LAST) + rsp
        self.dul.socket.send(_PDU_HEADER.pack(0x04, 0, len(pdv)) + pdv)

    def _pass(self, context_id: int, control: int, value: bytes) -> None:
        self._pass_pdv(context_id, bytes([control]) + value)

    def _pass_pdv(self, context_id: int, pdv: bytes) -> None:
        primitive = P_DATA()
        primitive.presentation_data_value_list.append((context_id, pdv))
        self.dul.assoc.dimse.receive_primitive(primitive)

    def _drop_sink(self) -> None:
        sink, self._sink = self._sink, None
        self._answer = None
        if sink is not None:
            sink.discard()

    def close(self) -> None:
        """The association ended: a data set still arriving is dropped."""
        self._drop_sink()
