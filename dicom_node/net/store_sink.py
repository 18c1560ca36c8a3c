"""What a received C-STORE must pass before it is filed, and the sink of the receive fast path.

:func:`checked_header` is the one check of a received data set, whichever path brought it (pynetdicom's
temp file under TLS, the fast path's spool temp file): the command's SOP class is its presentation
context's (PS3.7 9.3.1.1: else 0x0122), the header parses up to the pixel data, its four UIDs are valid,
and its SOP Class/Instance UIDs are the command's (else 0xA900).

:class:`StoreSink` is where :mod:`dicom_node.net.direct_store` writes one data set as it arrives: a
spool temp file (:meth:`~dicom_node.storage.ingest.Ingestor.open_incoming`), checked and filed by
:meth:`StoreSink.finish`, which returns the answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from dicom_node.errors import DatasetMismatchError, SopClassNotSupportedError
from dicom_node.net import dimse_status as st
from dicom_node.storage.header import InstanceHeader, read_header
from dicom_node.storage.incoming import IncomingFile
from dicom_node.storage.ingest import Ingestor, Origin

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    """What a C-STORE-RQ and its presentation context say about the data set that follows."""

    context_class: str
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str


def checked_header(
    dataset: BinaryIO,
    transfer_syntax: str,
    max_dataset_bytes: int,
    *,
    context_class: str,
    command_class: str,
    command_instance: str,
) -> InstanceHeader:
    """The validated header of the data set at ``dataset``'s position (no file meta; left at an
    unspecified position) in ``transfer_syntax``, for a C-STORE of ``command_class``/
    ``command_instance`` on a context of ``context_class``. Raises SopClassNotSupportedError, the
    header's errors, or DatasetMismatchError."""
    if context_class != command_class:
        raise SopClassNotSupportedError(f"{command_class} sent on the {context_class} context")
    header = read_header(dataset, transfer_syntax, max_inflated_bytes=max_dataset_bytes).validated()
    if header.sop_class_uid != command_class:
        raise DatasetMismatchError(
            f"SOP Class UID {header.sop_class_uid} differs from the command's {command_class}"
        )
    if header.sop_instance_uid != command_instance:
        raise DatasetMismatchError(
            f"SOP Instance UID {header.sop_instance_uid} differs from the command's {command_instance}"
        )
    return header


def error_comment(text: str) -> str:
    """An Error Comment (LO): 64 printable characters, no backslash."""
    return "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text).strip()[:64]


class StoreSink:
    """One C-STORE data set on the receive fast path: written to a spool temp file fragment by
    fragment (:meth:`write`), then checked, filed and journaled by :meth:`finish`. ``on_failure``
    logs and journals a failure and gives its (status, Error Comment); ``on_stored`` counts a success.
    :meth:`discard` drops it (the association ended half-way)."""

    def __init__(
        self,
        ingestor: Ingestor,
        command: Command,
        origin: Origin,
        *,
        on_failure: Callable[[Exception], tuple[int, str]],
        on_stored: Callable[[], None],
    ) -> None:
        self.ingestor = ingestor
        self.command = command
        self.origin = origin
        self.on_failure = on_failure
        self.on_stored = on_stored
        self.incoming: IncomingFile | None = None
        self.error: Exception | None = None  # answered once the data set has been read off the network
        self.header: InstanceHeader | None = None  # checked while the data set arrived
        self._tried_early = False
        try:
            self.incoming = ingestor.open_incoming(
                command.sop_class_uid, command.sop_instance_uid, command.transfer_syntax, origin
            )
        except Exception as exc:
            self.error = exc

    def write(self, fragment: memoryview) -> None:
        incoming = self.incoming
        if incoming is None:
            return
        incoming.write(fragment)
        if self.header is None and not self._tried_early and incoming.prefix_complete:
            # the header is checked while the rest still arrives (the sender is the slower side);
            # a header that goes on past what has arrived is checked again once all is in
            self._tried_early = True
            with contextlib.suppress(Exception):
                self.header = self._check(incoming, complete=False)

    def _check(self, incoming: IncomingFile, *, complete: bool) -> InstanceHeader:
        command = self.command
        return checked_header(
            incoming.dataset_reader(complete=complete),
            command.transfer_syntax,
            self.ingestor.spool.max_dataset_bytes,
            context_class=command.context_class,
            command_class=command.sop_class_uid,
            command_instance=command.sop_instance_uid,
        )

    def finish(self) -> tuple[int, str]:
        """File the complete data set; (status, Error Comment) for the C-STORE-RSP."""
        incoming, self.incoming = self.incoming, None
        command = self.command
        try:
            if self.error is not None:
                raise self.error
            assert incoming is not None
            header = self.header or self._check(incoming, complete=True)
            self.ingestor.ingest_incoming(header, command.transfer_syntax, incoming, self.origin)
        except Exception as exc:
            if incoming is not None:
                incoming.discard()
            return self.on_failure(exc)
        self.on_stored()
        logger.debug("stored %s (series %s) from %s", header.sop_instance_uid, header.series_uid, self.origin)
        return st.SUCCESS, ""

    def discard(self) -> None:
        incoming, self.incoming = self.incoming, None
        if incoming is not None:
            incoming.discard()
