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
- **The SHA-256 of the data set runs in a background thread** (:meth:`IncomingFile.start_hash`)
  while the file and its folder are fsynced: it reads the data set back from the page cache, so
  nothing is hashed while the network is read, and it needs the interpreter lock only between its
  reads and digest updates. The fsyncs stay in the calling thread: started from a pool thread they
  would wait for the interpreter lock until the caller blocked anyway (Python code such as the header
  check does not give it up before the switch interval). Without fsyncs (``node.fsync: false``)
  there is nothing to overlap: the data set is hashed as it is written.

Durability is unchanged: :meth:`IncomingFile.commit` waits for the fsync before the rename, and the
folder's fsync after it, as :meth:`~dicom_node.storage.filing.Spool.store` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from dicom_node.storage.filing import Buffer, Spool, StoredFile

logger = logging.getLogger(__name__)

PREFIX_BYTES = 64 * 1024  # of the data set kept in memory for the header check
_HASH_CHUNK = 1024 * 1024


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
    meta, not hashed) is written first. A failed write is kept and raised by :meth:`commit`, so the
    caller can read the rest of the message off the network first."""

    def __init__(self, spool: Spool, head: Buffer) -> None:
        self.spool = spool
        self.path: Path = spool.tmp_dir / f"{uuid.uuid4().hex}.part"
        self.size = 0
        self.error: OSError | None = None
        self._head_size = memoryview(head).nbytes
        self._prefix = bytearray()
        self._hash: Future[str] | None = None
        self._synced = False
        try:
            # read and write: the header check and the hash read it back through the same descriptor
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise spool._write_error(exc, self.path.name) from exc
        # without fsyncs there is nothing to hash alongside: the data set is hashed as it is written
        self._digest = None if spool.fsync else hashlib.sha256()
        self._append(head, hashed=False)

    def write(self, data: Buffer) -> None:
        self._append(data, hashed=True)

    def _append(self, data: Buffer, *, hashed: bool) -> None:
        if self.error is not None or self._fd < 0:
            return
        view = memoryview(data).cast("B")
        if hashed and self._digest is not None:
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

    def start_hash(self) -> None:
        """Begin the SHA-256 of the data set in a background thread (it reads the file back from the
        page cache); :meth:`commit` waits for it last."""
        if self.error is None and self._fd >= 0 and self._hash is None and self._digest is None:
            self._hash = self.spool.background().submit(self._data_set_sha256)

    def _data_set_sha256(self) -> str:
        digest = hashlib.sha256()
        offset = self._head_size
        while offset < self.size:
            chunk = os.pread(self._fd, min(_HASH_CHUNK, self.size - offset), offset)
            if not chunk:
                raise OSError(f"{self.path} is shorter than the {self.size} bytes written")
            digest.update(chunk)
            offset += len(chunk)
        return digest.hexdigest()

    def sync(self) -> None:
        """fsync the file now (when the spool fsyncs), in this thread; :meth:`commit` then does not.
        A failure is kept and raised by :meth:`commit`."""
        if self.spool.fsync and not self._synced and self.error is None and self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self.error = exc
                return
            self._synced = True

    def commit(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> StoredFile:
        """fsync, rename to the instance's spool path, fsync its folder. Raises InvalidUIDError,
        OutOfResourcesError or StorageError, after which the temp file is gone. The data set's hash
        is waited for last: it runs on while the file is renamed and its folder fsynced."""
        from dicom_node.storage.filing import StoredFile

        spool = self.spool
        try:
            relpath = spool.relpath_for(study_uid, series_uid, sop_instance_uid)
            if self.error is not None:
                raise spool._write_error(self.error, relpath) from self.error
            spool._check_space(self.size)
            final = spool.storage_dir / relpath
            try:
                self.start_hash()
                if spool.fsync and not self._synced:
                    # in this thread: the interpreter lock is free meanwhile for the hash
                    os.fsync(self._fd)
                new_dirs = spool._place(self.path, final, relpath)
            except OSError as exc:
                raise spool._write_error(exc, relpath) from exc
        except BaseException:
            self.discard()
            raise
        try:
            if spool.fsync:
                spool._sync_dirs(final.parent, new_dirs)
        finally:
            task, self._hash = self._hash, None
            sha256: str | None = None
            try:
                if task is not None:
                    sha256 = task.result()
                else:
                    sha256 = self._digest.hexdigest() if self._digest is not None else None
            finally:
                self._close()  # the hash read through the descriptor
        return StoredFile(relpath=relpath, size=self.size, sha256=sha256)

    def discard(self) -> None:
        """Drop the temp file (the message failed or its association ended half-way)."""
        task, self._hash = self._hash, None
        if task is not None:
            with contextlib.suppress(Exception):
                task.result()  # the fd stays open until the hash is done
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
