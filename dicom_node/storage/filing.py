"""Durable filing of received instances in the spool.

``storage_dir/spool/<study>/<series>/<sop>.dcm``, built only from UIDs that pass
:func:`dicom_node.uids.require_uid`. A file is written to ``spool/.tmp/<unique>.part``, fsynced, renamed
into place with :func:`os.replace` (atomic: readers see the old file or the new one, never half of
one) and its directory is fsynced, so an acknowledged instance survives a crash or power loss. A full
disk, or free space below the configured reserve, raises :class:`OutOfResourcesError` (0xA700) and
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from dicom_node.errors import InvalidUIDError, OutOfResourcesError, StorageError
from dicom_node.storage.digest import ContentDigest
from dicom_node.storage.dir_sync import DirSyncer
from dicom_node.storage.header import read_part10_header
from dicom_node.storage.incoming import IncomingFile
from dicom_node.storage.journal import InstanceRecord, Journal
from dicom_node.uids import require_uid
from inference.inflate_guard import DEFAULT_MAX_INFLATED_BYTES

logger = logging.getLogger(__name__)

# What store() accepts: a buffer, an open binary file (read from its current position), or several of
# these written in order (no concatenation copy).
Buffer = bytes | bytearray | memoryview
Part = Buffer | BinaryIO
Payload = Part | Sequence[Part]

_COPY_CHUNK = 1024 * 1024
# statvfs is re-read at most this often, or sooner when the running estimate nears the reserve
_SPACE_RECHECK_SECONDS = 1.0
_SPACE_RECHECK_MARGIN = 256 * 1024 * 1024
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


@dataclass(frozen=True)
class StoredFile:
    """A filed instance: its path relative to ``storage_dir`` (POSIX separators) and size."""

    relpath: str
    size: int
    digest: str | None = None  # of the parts from ``hashed_from`` on (the data set), when asked


def _parts(payload: Payload) -> Sequence[Part]:
    if isinstance(payload, bytes | bytearray | memoryview) or not isinstance(payload, Sequence):
        return [cast(Part, payload)]
    return cast(Sequence[Part], payload)


def part_size(part: Part) -> int:
    """Bytes a part will write (a file: from its position to its end; 0 if unknown)."""
    if isinstance(part, bytes | bytearray | memoryview):
        return memoryview(part).nbytes
    try:
        return max(0, os.fstat(part.fileno()).st_size - part.tell())
    except (OSError, AttributeError, ValueError):
        return 0  # unknown: the reserve check counts it as nothing


def _write_all(fd: int, data: Buffer) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _copy_file(fd: int, src: BinaryIO, digest: ContentDigest | None = None) -> None:
    if digest is not None:  # read through Python to hash what is written
        while chunk := src.read(_COPY_CHUNK):
            digest.update(chunk)
            _write_all(fd, chunk)
        return
    try:
        in_fd = src.fileno()
        offset = src.tell()
    except (OSError, AttributeError, ValueError):
        in_fd = -1
    if in_fd >= 0:
        # kernel-side copy, no Python buffers
        while True:
            sent = os.sendfile(fd, in_fd, offset, 16 * _COPY_CHUNK)
            if sent == 0:
                return
            offset += sent
    while chunk := src.read(_COPY_CHUNK):
        _write_all(fd, chunk)


class Spool:
    """The spool folder under ``storage_dir``; safe to use from several threads."""

    def __init__(
        self,
        storage_dir: Path,
        *,
        fsync: bool = True,
        min_free_bytes: int = 0,
        max_dataset_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    ) -> None:
        self.storage_dir = Path(storage_dir).resolve()
        self.root = self.storage_dir / "spool"
        self.tmp_dir = self.root / ".tmp"
        self.fsync = fsync
        self.min_free_bytes = max(0, int(min_free_bytes))
        # a deflated instance inflating beyond this is refused (receive, drop folder, reconciliation)
        self.max_dataset_bytes = max_dataset_bytes
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._space_lock = threading.Lock()
        self.dir_syncer = DirSyncer()
        self._free_estimate = 0
        self._free_checked_at: float | None = None

    # ------------------------------------------------------------------ paths

    def relpath_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        """The spool path (relative to ``storage_dir``) of an instance; raises InvalidUIDError."""
        study = require_uid(study_uid, "Study Instance UID")
        series = require_uid(series_uid, "Series Instance UID")
        sop = require_uid(sop_instance_uid, "SOP Instance UID")
        return f"spool/{study}/{series}/{sop}.dcm"

    def path_of(self, relpath: str) -> Path:
        """Absolute path of a spool-relative path; raises StorageError if it would leave the spool."""
        path = (self.storage_dir / relpath).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StorageError(f"path {relpath!r} lies outside the spool {self.root}")
        return path

    # ------------------------------------------------------------------ writing

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def store(
        self,
        payload: Payload,
        study_uid: str,
        series_uid: str,
        sop_instance_uid: str,
        *,
        hashed_from: int | None = None,
    ) -> StoredFile:
        """Write a Part 10 file durably to its spool path, replacing an earlier copy. With
        ``hashed_from``, the SHA-256 of the parts from that index on is computed while writing
        (the ingest path hashes the data set, not the file meta it writes).

        Raises InvalidUIDError (nothing written), OutOfResourcesError (disk full or below the
        reserve; nothing written) or StorageError (other I/O failure; nothing written)."""
        relpath = self.relpath_for(study_uid, series_uid, sop_instance_uid)
        final = self.storage_dir / relpath
        parts = _parts(payload)
        self._check_space(sum(part_size(p) for p in parts))

        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                digest = ContentDigest() if hashed_from is not None else None
                for index, part in enumerate(parts):
                    hashing = digest if hashed_from is not None and index >= hashed_from else None
                    if isinstance(part, bytes | bytearray | memoryview):
                        if hashing is not None:
                            hashing.update(part)
                        _write_all(fd, part)
                    else:
                        _copy_file(fd, part, hashing)
                written = os.fstat(fd).st_size
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            new_dirs = self._place(tmp, final, relpath)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise self._write_error(exc, relpath) from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise
        if self.fsync:
            self._sync_dirs(final.parent, new_dirs)
        return StoredFile(relpath=relpath, size=written, digest=digest.value() if digest else None)

    def open_incoming(self, head: Buffer) -> IncomingFile:
        """A temp file for an instance whose bytes arrive in pieces (the receive fast path writes
        each network fragment as it comes): ``head`` (preamble and file meta, not hashed) first, then
        :meth:`IncomingFile.write`; :meth:`IncomingFile.commit` files it as :meth:`store` does.

        Raises OutOfResourcesError or StorageError (nothing left behind)."""
        self._check_space(memoryview(head).nbytes)
        return IncomingFile(self, head)

    def _write_error(self, exc: OSError, relpath: str) -> StorageError:
        if exc.errno in _NO_SPACE:
            return OutOfResourcesError(f"no space left writing {relpath} in {self.root}")
        return StorageError(f"cannot write {relpath} in {self.root}: {exc}")

    def _place(self, tmp: Path, final: Path, relpath: str) -> list[Path]:
        """Rename the written temp file to its final path, creating the folders; returns the new
        folders. Retried once if a folder vanished meanwhile (retention removes empty study
        folders of purged series)."""
        for attempt in (1, 2):
            new_dirs = self._make_parents(final.parent)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                if attempt == 2 or not tmp.exists():
                    raise
                continue
            return new_dirs
        raise AssertionError("unreachable")

    def _check_space(self, size: int) -> None:
        """Refuse a write that would leave less than the reserve. statvfs is read again each
        second, or at once when the estimate (last reading minus what we wrote since) comes within
        256 MB of the reserve; a disk filled faster than that by others still ends in ENOSPC, which
        store() handles too."""
        if self.min_free_bytes <= 0:
            return
        now = time.monotonic()
        with self._space_lock:
            stale = self._free_checked_at is None or now - self._free_checked_at > _SPACE_RECHECK_SECONDS
            if stale or self._free_estimate - size < self.min_free_bytes + _SPACE_RECHECK_MARGIN:
                self._free_estimate = self.free_bytes()
                self._free_checked_at = now
            free = self._free_estimate
            if free - size < self.min_free_bytes:
                raise OutOfResourcesError(
                    f"free space in {self.root} is {free // (1024 * 1024)} MB, below the reserve of "
                    f"{self.min_free_bytes // (1024 * 1024)} MB plus this instance ({size} bytes)"
                )
            self._free_estimate = free - size

    def _make_parents(self, directory: Path) -> list[Path]:
        """Make sure the series folder (``directory``) and its study folder are real folders inside
        the spool, creating them; return those created, outermost first. The spool root was
        resolved at start-up and the folder names are UIDs, so only these two could lead elsewhere:
        a symlink planted in their place raises StorageError. A study folder removed meanwhile
        (retention drops empty ones) is made again."""
        for attempt in (1, 2, 3):
            created: list[Path] = []
            try:
                for folder in (directory.parent, directory):
                    try:
                        mode = os.lstat(folder).st_mode
                    except FileNotFoundError:
                        with contextlib.suppress(FileExistsError):  # a concurrent store made it
                            os.mkdir(folder)
                            created.append(folder)
                        mode = os.lstat(folder).st_mode
                    if not stat.S_ISDIR(mode):
                        raise StorageError(
                            f"{folder} is no folder: it could lead outside the spool {self.root}"
                        )
                return created
            except FileNotFoundError:
                if attempt == 3:
                    raise
        raise AssertionError("unreachable")

    def _sync_dirs(self, directory: Path, new_dirs: list[Path]) -> None:
        """fsync the folder that received the new entry and the parents of new folders."""
        to_sync = {directory}
        to_sync.update(d.parent for d in new_dirs)
        for d in sorted(to_sync, key=lambda p: len(p.parts), reverse=True):
            self.dir_syncer.sync(d)  # shared with concurrent stores into the same folder

    # ------------------------------------------------------------------ removing and recovery

    def remove(self, relpath: str) -> bool:
        """Delete a spool file (e.g. the older copy of a replaced instance). Returns whether a file
        was removed; folders are left (a concurrent store may be about to use them)."""
        path = self.path_of(relpath)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def clean_tmp(self) -> int:
        """Delete leftover temp files (writes interrupted by a crash). Returns how many."""
        removed = 0
        for entry in self.tmp_dir.iterdir():
            if entry.is_file() or entry.is_symlink():
                _unlink_quietly(entry)
                removed += 1
        return removed

    def iter_files(self) -> list[str]:
        """Relative paths of every ``.dcm`` file in the spool (temp folder excluded)."""
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d != ".tmp"]
            for name in filenames:
                if name.endswith(".dcm"):
                    out.append(Path(dirpath, name).relative_to(self.storage_dir).as_posix())
        return sorted(out)

    def reconcile(self, journal: Journal) -> dict[str, int]:
        """Start-up repair: delete stale temp files and record spool files the journal does not know
        (the journal may lose its last transactions on power loss; the files were fsynced first).

        Each unknown file's header is read as the receiver reads it (up to (0020,1002)). Files that
        cannot be read are left in place and logged as events."""
        stats = {"tmp_removed": self.clean_tmp(), "recorded": 0, "unreadable": 0}
        known = journal.known_paths()
        for relpath in self.iter_files():
            if relpath in known:
                continue
            try:
                record = self._record_from_file(relpath)
            except (OSError, InvalidUIDError, StorageError) as exc:
                stats["unreadable"] += 1
                message = f"spool file {relpath} not recorded: {exc}"
                logger.error("%s", message)
                journal.log_event("error", "reconcile_failed", message)
                continue
            outcome = journal.record_instance(record)
            if outcome.old_path is not None:
                self.remove(outcome.old_path)
            stats["recorded"] += 1
            logger.info("reconciled %s (series %s)", relpath, record.series_uid)
        if stats["recorded"] or stats["tmp_removed"] or stats["unreadable"]:
            logger.info(
                "spool reconciled: %d recorded, %d temp files removed, %d unreadable",
                stats["recorded"],
                stats["tmp_removed"],
                stats["unreadable"],
            )
        return stats

    def _record_from_file(self, relpath: str) -> InstanceRecord:
        path = self.path_of(relpath)
        with path.open("rb") as fp:
            # as the receiver read it
            layout, header = read_part10_header(fp, max_inflated_bytes=self.max_dataset_bytes)
            header.validated()
            size = os.fstat(fp.fileno()).st_size
            received_at = os.fstat(fp.fileno()).st_mtime
            digest = ContentDigest()  # of the data set, as filing takes it
            while chunk := fp.read(_COPY_CHUNK):
                digest.update(chunk)
        meta = layout.file_meta
        return InstanceRecord(
            sop_instance_uid=header.sop_instance_uid,
            sop_class_uid=header.sop_class_uid,
            series_uid=header.series_uid,
            study_uid=header.study_uid,
            transfer_syntax=layout.transfer_syntax,
            path=relpath,
            size=size,
            # filing writes the AE titles into the file meta, so they survive a lost journal row
            called_ae=str(meta.get("ReceivingApplicationEntityTitle", "") or "").strip(),
            calling_ae=str(meta.get("SendingApplicationEntityTitle", "") or "").strip(),
            association_id=None,
            received_at=received_at,
            modality=header.modality,
            series_description=header.series_description,
            expected_count=header.expected_count,
            acquisition=header.acquisition,
            digest=digest.value(),
        )


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot remove temp file %s: %s", path, exc)
