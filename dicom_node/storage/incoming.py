"""A spool temp file written piece by piece, as a C-STORE's fragments come off the network.

The receive fast path (:mod:`dicom_node.net.direct_store`) opens one per C-STORE with
:meth:`dicom_node.storage.filing.Spool.open_incoming`, writes our file meta and then each fragment, and
files it with :meth:`IncomingFile.commit` once the header was checked. What keeps an instance's time
on the critical path (the sender waits for its answer) short:

- **The header is read from memory**: the first :data:`PREFIX_BYTES` of the data set are kept as they
  are written, and :meth:`IncomingFile.dataset_reader` serves reads from them (reading the file only
  for a header longer than that), instead of opening the file again. The receive fast path checks
  the header as soon as the prefix is full, while the rest still arrives
  (:class:`dicom_node.net.store_sink.StoreSink`): such a reader raises :class:`IncompleteData` for a
  read past what was written, so a header is never taken as ending where the data so far end.
- **The data set is digested as it is written** (:mod:`dicom_node.storage.digest`: XXH3-128,
  0.009 ms for a CT image).

Durability is unchanged: :meth:`IncomingFile.commit` waits for the fsync before the rename, and the
folder's fsync after it, as :meth:`~dicom_node.storage.filing.Spool.store` does.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from dicom_node.storage.digest import ContentDigest

if TYPE_CHECKING:
    from dicom_node.storage.filing import Buffer, Spool, StoredFile

logger = logging.getLogger(__name__)

PREFIX_BYTES = 64 * 1024  # of the data set kept in memory for the header check


class IncompleteData(Exception):
    """A read of a data set still arriving went past what has arrived so far."""


class _PrefixedReader(io.BytesIO):
    """A read-only view of a file whose first bytes are in memory: reads within them cost no system
    call, a read that goes past them ``pread``s the file (``fd`` must stay open while this is used).
    ``complete=False``: the file is still being written; a read past its ``size`` bytes raises
    :class:`IncompleteData` instead of returning short (a reader never sees an end that is not
    there)."""

    def __init__(self, prefix: bytes, fd: int, size: int, *, complete: bool = True) -> None:
        super().__init__(prefix)
        self._prefix_size = len(prefix)
        self._fd = fd
        self._size = size
        self._complete = complete

    def read(self, size: int | None = -1) -> bytes:
        pos = self.tell()
        want = size is not None and size >= 0
        if not self._complete and (not want or pos + (size or 0) > self._size):
            raise IncompleteData(
                f"a read to {'the end' if not want else pos + (size or 0)} of {self._size} bytes"
            )
        end = self._size if not want else min(self._size, pos + (size or 0))
        if end <= self._prefix_size:
            return super().read(max(0, end - pos))
        out = super().read(max(0, self._prefix_size - pos)) if pos < self._prefix_size else b""
        start = pos + len(out)
        while start < end:
            chunk = os.pread(self._fd, end - start, start)
            if not chunk:
                break
            out += chunk
            start += len(chunk)
        self.seek(start)
        return out

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            if not self._complete:
                raise IncompleteData("the end of a data set still arriving")
            return super().seek(self._size + offset)
        return super().seek(offset, whence)


class IncomingFile:
    """A spool temp file written piece by piece (see module docstring). ``head`` (preamble and file
    meta, not digested) is written first. A failed write is kept and raised by :meth:`commit`, so the
    caller can read the rest of the message off the network first."""

    def __init__(self, spool: Spool, head: Buffer) -> None:
        self.spool = spool
        self.path: Path = spool.tmp_dir / f"{uuid.uuid4().hex}.part"
        self.size = 0
        self.error: OSError | None = None
        self._head_size = memoryview(head).nbytes
        self._prefix = bytearray()
        try:
            # read and write: the header check reads past the kept prefix through the same descriptor
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise spool._write_error(exc, self.path.name) from exc
        self._digest = ContentDigest()
        self._append(head, hashed=False)

    def write(self, data: Buffer) -> None:
        self._append(data, hashed=True)

    def _append(self, data: Buffer, *, hashed: bool) -> None:
        if self.error is not None or self._fd < 0:
            return
        view = memoryview(data).cast("B")
        if hashed:
            self._digest.update(view)
        try:
            room = self._head_size + PREFIX_BYTES - len(self._prefix)
            if room > 0:
                self._prefix += view[:room]
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self.size += written
        except OSError as exc:
            self.error = exc

    @property
    def prefix_complete(self) -> bool:
        """Whether the kept prefix of the data set is full (more may follow)."""
        return len(self._prefix) >= self._head_size + PREFIX_BYTES

    def dataset_reader(self, *, complete: bool = True) -> BinaryIO:
        """The written data set (after the head) for reading, served from memory as far as the kept
        prefix goes. ``complete=False`` while more is to come: a read past what was written raises
        :class:`IncompleteData`. Valid until :meth:`commit` or :meth:`discard`."""
        reader = _PrefixedReader(bytes(self._prefix), self._fd, self.size, complete=complete)
        reader.seek(self._head_size)
        return reader

    def commit(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> StoredFile:
        """fsync, rename to the instance's spool path, fsync its folder. Raises InvalidUIDError,
        OutOfResourcesError or StorageError, after which the temp file is gone."""
        from dicom_node.storage.filing import StoredFile

        spool = self.spool
        try:
            relpath = spool.relpath_for(study_uid, series_uid, sop_instance_uid)
            if self.error is not None:
                raise spool._write_error(self.error, relpath) from self.error
            spool._check_space(self.size)
            final = spool.storage_dir / relpath
            try:
                if spool.fsync:
                    os.fsync(self._fd)
                self._close()
                new_dirs = spool._place(self.path, final, relpath)
            except OSError as exc:
                raise spool._write_error(exc, relpath) from exc
        except BaseException:
            self.discard()
            raise
        if spool.fsync:
            spool._sync_dirs(final.parent, new_dirs)
        return StoredFile(relpath=relpath, size=self.size, digest=self._digest.value())

    def discard(self) -> None:
        """Drop the temp file (the message failed or its association ended half-way)."""
        self._close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot remove temp file %s: %s", self.path, exc)

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
