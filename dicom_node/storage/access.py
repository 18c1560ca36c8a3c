"""Who may read the storage folder, and which node owns it.

The spool, the outputs and the journal hold patient data. ``node.storage_permissions`` says who may
read them: ``owner`` (files 0600, folders 0700) or ``group`` (0640/0750). The node applies it with
its process umask, set once at start-up, so every file the process creates - the spool's, SQLite's
journal and WAL, the SEG/RTSTRUCT/NIfTI outputs written by highdicom and nnU-Net, temp files - gets
it without each writer having to know; the storage folder itself is given the folder mode, which
also closes whatever an older version left readable below it.

One node per storage folder: two nodes on one folder would each remove the other's temp files at
start-up and write one journal from two processes. :func:`lock_storage` takes an exclusive
``flock`` on ``storage_dir/.lock`` for the life of the node; a second node refuses to start, naming
the process that holds it. The lock is released by the kernel when the process dies, so a crashed
node never leaves a stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicom_node.errors import NodeError

logger = logging.getLogger(__name__)

StoragePermissions = Literal["owner", "group"]
LOCK_NAME = ".lock"


class StorageInUseError(NodeError):
    """Another node holds the storage folder."""


@dataclass(frozen=True)
class Access:
    """The modes of one ``storage_permissions`` setting."""

    folder_mode: int
    file_mode: int

    @property
    def umask(self) -> int:
        return 0o777 & ~self.folder_mode

    @classmethod
    def of(cls, permissions: StoragePermissions) -> Access:
        if permissions == "owner":
            return cls(0o700, 0o600)
        return cls(0o750, 0o640)


def apply_permissions(storage_dir: Path, permissions: StoragePermissions) -> Access:
    """Set the process umask for ``permissions`` (once, at start-up) and create the storage folder
    with its folder mode (or give it that mode). Returns the modes."""
    access = Access.of(permissions)
    os.umask(access.umask)
    try:
        storage_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NodeError(f"cannot create the storage folder {storage_dir}: {exc}") from exc
    try:
        os.chmod(storage_dir, access.folder_mode)
    except OSError as exc:  # not ours (a shared folder): what it holds still gets the umask's modes
        logger.warning("cannot give %s the mode %o: %s", storage_dir, access.folder_mode, exc)
    return access


class StorageLock:
    """An exclusive lock on a storage folder, held until :meth:`release` or the process ends."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def lock_storage(storage_dir: Path) -> StorageLock:
    """Take the storage folder's lock or raise :class:`StorageInUseError` naming its holder."""
    path = storage_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise NodeError(f"cannot open the storage folder's lock {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StorageInUseError(
                f"the storage folder {storage_dir} is in use by another node (pid {holder}); "
                "one node per storage_dir"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StorageLock(fd, path)
