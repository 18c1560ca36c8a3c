"""Count the PDVs and data set bytes of the DIMSE message a peer is sending, as the bytes arrive.

A P-DATA-TF PDU body is a run of PDV items (PS3.8 9.3.5.1): a 4-byte item length, a presentation
context id, a message control header (bit 0: command, bit 1: last fragment) and the fragment. pynetdicom
decodes every PDV into an object and appends its fragment to the message it assembles, so a peer can
make it buffer an unbounded data set, or spend seconds of CPU on millions of empty PDVs, before any
handler of ours runs. :class:`PdvMeter` follows the PDV framing of the P-DATA bodies the PDU guard
passes through (it skips over fragment values without looking at them) and says when the message
exceeds :class:`MessageLimits`; the guard then aborts the association, so nothing of that message
reaches a handler and nothing of it is filed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_PDV_HEADER = 6  # item length (4), presentation context id (1), message control header (1)
# a fragment this small that is not the last of its command or data set is a "small fragment": real
# senders fill their PDUs (our smallest announced maximum PDU length is 4096)
SMALL_FRAGMENT = 1024
MAX_COMMAND_BYTES = 1024 * 1024  # a DIMSE command set is a few hundred bytes


@dataclass(frozen=True)
class MessageLimits:
    """``max_dataset_bytes``: largest data set one message may carry; ``max_small_fragments``: most
    fragments below :data:`SMALL_FRAGMENT` bytes (other than the last) in one command or data set."""

    max_dataset_bytes: int
    max_small_fragments: int = 1024


class PdvMeter:
    """Follows the PDVs of the P-DATA-TF bodies fed to it. Feed each body's bytes in order with
    :meth:`feed` after :meth:`start_pdu`; a returned string is the reason the message is refused."""

    def __init__(self, limits: MessageLimits) -> None:
        self.limits = limits
        self.skip = 0  # bytes of the current fragment value still to come in this PDU body
        self._header = b""
        self._dataset_bytes = 0
        self._command_bytes = 0
        self._small = 0

    def start_pdu(self) -> None:
        """A new P-DATA-TF body begins (a PDV never spans PDUs)."""
        self.skip = 0
        self._header = b""

    def feed(self, data: bytes | bytearray | memoryview) -> str | None:
        """Account for the next bytes of the body; returns why the message is refused, or None."""
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self.skip:
                step = min(self.skip, end - pos)
                self.skip -= step
                pos += step
                continue
            need = _PDV_HEADER - len(self._header)
            if end - pos < need:
                self._header += bytes(view[pos:end])
                return None
            header = self._header + bytes(view[pos : pos + need])
            self._header = b""
            pos += need
            item_length, _context, control = struct.unpack(">IBB", header)
            value = max(0, item_length - 2)
            self.skip = value
            refused = self._account(value, control)
            if refused is not None:
                return refused
        return None

    def _account(self, value: int, control: int) -> str | None:
        command, last = bool(control & 0x01), bool(control & 0x02)
        if command:
            self._command_bytes += value
            if self._command_bytes > MAX_COMMAND_BYTES:
                return f"command set larger than {MAX_COMMAND_BYTES} bytes"
        else:
            self._dataset_bytes += value
            if self._dataset_bytes > self.limits.max_dataset_bytes:
                return f"data set larger than the {self.limits.max_dataset_bytes} bytes allowed"
        if not last and value < SMALL_FRAGMENT:
            self._small += 1
            if self._small > self.limits.max_small_fragments:
                return (
                    f"more than {self.limits.max_small_fragments} fragments under {SMALL_FRAGMENT} bytes"
                    " in one message"
                )
        if last:
            self._small = 0
            if command:
                self._command_bytes = 0
            else:
                self._dataset_bytes = 0
                self._command_bytes = 0
        return None
