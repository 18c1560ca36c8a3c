"""The drop folder: DICOM files copied into ``storage_dir/incoming`` (sub-folders too) are ingested as if
they had been received (called AE = the node's first AE title, calling AE ``DROPFOLDER``).

A file is taken when it is complete: one poll interval after its writer closed it (inotify
close-after-write) or after it was moved in, provided nothing changed since (``cp -p`` and
``shutil.copy`` set times and permissions after closing); otherwise when its size and modification time
are unchanged across two polls.
Watchdog events are the fast path; a start-up scan and a periodic rescan find whatever they missed.
Each file is read once, filed through the same :class:`~dicom_node.storage.ingest.Ingestor` as C-STORE
instances and then deleted. Files that are not DICOM Part 10 or whose UIDs cannot be used go to
``incoming/rejected/`` with a ``.reason.txt`` beside them and an event in the journal. When the disk is
full a file stays where it is and is tried again later.

Hidden files and folders (names starting with ``.``, e.g. rsync's temp files) are ignored.

Whoever may write into the drop folder must not gain the node's rights: links are never followed. A
file is opened with ``O_NOFOLLOW`` (a symbolic link, even to a readable DICOM file, is rejected, the link
itself moved aside); the rejected folder is checked to hold no link on the way to a moved file; a
``.reason.txt`` is written to a new temp file renamed over its name (a planted link is replaced, never
followed). A file is parsed from its handle: only its
header is read before it is accepted or rejected, then it is streamed into the spool. One file that
fails in an unexpected way is rejected with the error as its reason; the others go on.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from dicom_node.errors import (
    CannotUnderstandError,
    InvalidUIDError,
    OutOfResourcesError,
    StorageError,
)
from dicom_node.storage.header import read_part10_header
from dicom_node.storage.ingest import Ingestor, Origin
from dicom_node.textsafe import printable
from inference.atomic import write_text_atomic

logger = logging.getLogger(__name__)

DROPFOLDER_CALLING_AE = "DROPFOLDER"
REJECTED_DIR = "rejected"


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable_polls: int = 0
    closed_at: float | None = None  # monotonic time of a close-after-write / moved-in event


class _Events(FileSystemEventHandler):
    """Watchdog callbacks (observer thread) -> the drop folder's queue."""

    def __init__(self, ready: Callable[[Path], None], changed: Callable[[Path], None]) -> None:
        self._ready = ready
        self._changed = changed

    def on_closed(self, event: FileClosedEvent) -> None:
        self._ready(Path(os.fsdecode(event.src_path)))

    def on_moved(self, event: DirMovedEvent | FileMovedEvent) -> None:
        if not event.is_directory:
            self._ready(Path(os.fsdecode(event.dest_path)))

    def on_created(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileCreatedEvent):
            self._changed(Path(os.fsdecode(event.src_path)))

    def on_modified(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileModifiedEvent):
            self._changed(Path(os.fsdecode(event.src_path)))


class DropFolder:
    """Watches ``incoming`` and files what lands there. ``start()`` / ``stop()``; :meth:`scan` and
    :meth:`ingest_file` can also be called directly (tests, one-shot use)."""

    def __init__(
        self,
        incoming: Path,
        ingestor: Ingestor,
        *,
        called_ae: str,
        calling_ae: str = DROPFOLDER_CALLING_AE,
        poll_seconds: float = 1.0,
        rescan_seconds: float = 30.0,
        watch: bool = True,
    ) -> None:
        self.incoming = Path(incoming)
        self.rejected = self.incoming / REJECTED_DIR
        self.ingestor = ingestor
        self.origin = Origin(called_ae=called_ae, calling_ae=calling_ae, association_id=None)
        self.poll_seconds = poll_seconds
        self.rescan_seconds = rescan_seconds
        self.watch = watch
        self._queue: queue.Queue[tuple[str, Path]] = queue.Queue()
        self._seen: dict[Path, _Seen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: BaseObserver | None = None
        self.incoming.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> DropFolder:
        self._stop.clear()
        if self.watch:
            observer = Observer()
            handler = _Events(
                ready=lambda p: self._queue.put(("ready", p)),
                changed=lambda p: self._queue.put(("changed", p)),
            )
            observer.schedule(handler, str(self.incoming), recursive=True)
            observer.daemon = True
            observer.start()
            self._observer = observer
        self._thread = threading.Thread(target=self._run, name="dropfolder", daemon=True)
        self._thread.start()
        logger.info("drop folder watching %s", self.incoming)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._queue.put(("stop", self.incoming))
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            self.scan()  # start-up: whatever arrived while the node was down
        except Exception:
            logger.exception("drop folder: start-up scan failed (going on)")
        next_rescan = time.monotonic() + self.rescan_seconds
        next_poll = time.monotonic() + self.poll_seconds
        while not self._stop.is_set():
            timeout = max(0.0, min(next_poll, next_rescan) - time.monotonic())
            try:
                kind, path = self._queue.get(timeout=timeout)
            except queue.Empty:
                kind, path = "", self.incoming
            try:
                if kind == "ready" and self._eligible(path):
                    self._note(path, closed=True)
                elif kind == "changed" and self._eligible(path):
                    self._note(path)
                now = time.monotonic()
                if now >= next_rescan:
                    self.scan(only_stable=True)
                    next_rescan = now + self.rescan_seconds
                if now >= next_poll:
                    self._poll()
                    next_poll = now + self.poll_seconds
            except Exception:
                logger.exception("drop folder: unexpected error (going on)")

    # ------------------------------------------------------------------ finding files

    def _eligible(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.incoming)
        except ValueError:
            return False
        parts = rel.parts
        if not parts or parts[0] == REJECTED_DIR:
            return False
        return not any(p.startswith(".") for p in parts)

    def _candidates(self) -> list[Path]:
        out: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(self.incoming):
            here = Path(dirpath)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".") and not (here == self.incoming and d == REJECTED_DIR)
            )
            out.extend(here / f for f in sorted(filenames) if not f.startswith("."))
        return out

    def is_pending(self, path: Path) -> bool:
        """Whether a file was noticed and waits for its size to settle."""
        return path in self._seen

    def _note(self, path: Path, *, closed: bool = False) -> None:
        """Remember a file's size/mtime; a change restarts its stability count."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            self._seen.pop(path, None)
            return
        seen = self._seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            seen = self._seen[path] = _Seen(st.st_size, st.st_mtime_ns)
        if closed:
            seen.closed_at = time.monotonic()

    def _poll(self) -> None:
        """Ingest noted files that are complete: closed by their writer (or moved in) and unchanged
        for a poll interval since (copiers set permissions and times after closing), or unchanged
        across two polls."""
        now = time.monotonic()
        for path in list(self._seen):
            seen = self._seen[path]
            try:
                st = path.lstat()
            except FileNotFoundError:
                del self._seen[path]
                continue
            if (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._seen[path] = _Seen(st.st_size, st.st_mtime_ns, closed_at=seen.closed_at)
                continue
            seen.stable_polls += 1
            closed = seen.closed_at is not None and now - seen.closed_at >= self.poll_seconds
            if (closed or seen.stable_polls >= 2) and st.st_size > 0:
                del self._seen[path]
                self.ingest_file(path)

    def scan(self, *, only_stable: bool = False) -> int:
        """Look at every file in the folder. A full scan (start-up) files what has not changed for two
        poll intervals at once and notes the rest for the stability check; a rescan
        (``only_stable=True``) only notes files. Returns how many files were filed."""
        filed = 0
        now = time.time()
        for path in self._candidates():
            if path in self._seen:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            recent = now - st.st_mtime < 2 * self.poll_seconds
            if only_stable or recent or st.st_size == 0:
                self._note(path)
            elif self.ingest_file(path):
                filed += 1
        return filed

    # ------------------------------------------------------------------ ingesting

    def ingest_file(self, path: Path) -> bool:
        """Check and file one file; remove it when filed, move it to ``rejected`` when it is not
        usable. Returns whether it was filed."""
        rel = path.relative_to(self.incoming).as_posix()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._reject(path, rel, "a symbolic link (links are never followed in the drop folder)")
            else:
                logger.warning("drop folder: cannot read %s: %s", printable(rel), exc)
            return False
        try:
            with os.fdopen(fd, "rb") as fp:  # streamed: a large file is never held whole in memory
                if not stat.S_ISREG(os.fstat(fp.fileno()).st_mode):
                    self._reject(path, rel, "not a regular file")
                    return False
                limit = self.ingestor.spool.max_dataset_bytes
                layout, header = read_part10_header(fp, max_inflated_bytes=limit)
                header.validated()
                self.ingestor.ingest(header, layout.transfer_syntax, fp, self.origin)
        except (CannotUnderstandError, InvalidUIDError) as exc:
            self._reject(path, rel, str(exc))
            return False
        except OutOfResourcesError as exc:
            logger.warning("drop folder: %s stays for later: %s", printable(rel), exc)
            self._log_event("error", "dropfolder_deferred", f"{rel}: {exc}")
            return False
        except StorageError as exc:
            logger.error("drop folder: cannot file %s: %s", printable(rel), exc)
            self._log_event("error", "dropfolder_failed", f"{rel}: {exc}")
            return False
        except Exception as exc:  # one bad file never stops the drop folder
            logger.exception("drop folder: unexpected error filing %s", printable(rel))
            self._reject(path, rel, f"unexpected error: {type(exc).__name__}: {exc}")
            return False
        path.unlink(missing_ok=True)
        logger.info("drop folder: filed %s (series %s)", printable(rel), header.series_uid)
        return True

    def _reject(self, path: Path, rel: str, reason: str) -> None:
        target = self.rejected / rel
        if target.exists() or target.is_symlink():
            target = target.with_name(f"{target.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}")
        try:
            self._check_no_links(target.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._check_no_links(target.parent)
            os.replace(path, target)  # moves a link itself, never its target
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.error("drop folder: cannot move %s aside (%s); it stays", printable(rel), exc)
            self._log_event("error", "dropfolder_failed", f"{rel}: {reason}; cannot move it aside: {exc}")
            return
        try:  # a new temp file renamed over the name: a planted link is replaced, never followed
            write_text_atomic(target.with_name(target.name + ".reason.txt"), f"{rel}: {reason}\n")
        except OSError as exc:
            logger.warning("drop folder: cannot write the reason next to %s: %s", printable(rel), exc)
        logger.warning("drop folder: rejected %s: %s", printable(rel), reason)
        self._log_event("warning", "dropfolder_rejected", f"{rel}: {reason}")

    def _check_no_links(self, folder: Path) -> None:
        """Refuse a folder under ``rejected`` reached through a symbolic link."""
        here = folder
        while True:
            if here.is_symlink():
                raise OSError(errno.ELOOP, f"{here} is a symbolic link")
            if here == self.rejected or here == here.parent:
                return
            here = here.parent

    def _log_event(self, level: str, kind: str, message: str) -> None:
        try:
            self.ingestor.journal.log_event(level, kind, message)
        except Exception:
            logger.exception("cannot record a drop folder event in the journal")
