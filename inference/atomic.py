"""The one way the project writes a file that matters (SEG, NIfTI outputs, drop-folder reason files,
demo files): a temp file beside the target, fsynced, renamed over the target, and the folder
fsynced. A reader sees the old file or the new one, never half of one, and after a crash the new
one is either complete or absent. (The spool's hot path, :class:`dicom_node.storage.filing.Spool`,
does the same with its own temp folder and free-space checks.)"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".part") -> Iterator[Path]:
    """A temp path beside ``path`` to write to (for writers that want a file name; ``suffix`` keeps
    the extension they look at); on leaving the block it is fsynced and renamed to ``path``. On an
    error it is removed and ``path`` is left as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` atomically and durably when the block ends."""
    with atomic_path(path) as temp, temp.open("wb") as stream:
        yield stream


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically and durably."""
    with atomic_write(path) as stream:
        stream.write(text.encode("utf-8"))
