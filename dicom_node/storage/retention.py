"""Retention: series (matched or not) and their results are deleted ``retention_days`` after their last
activity.

A background thread sweeps ``first_delay`` seconds after start and then every ``interval`` seconds;
:meth:`RetentionService.wake` asks for a sweep now. A series' last activity is the latest of its last
received instance, its jobs' ends and its deliveries' ends. An expired series is kept while its work is
unfinished (still receiving, a pending or running job, a pending or sending delivery); each sweep names
such a series in the log.

Purging one series happens under its purge lock (:class:`dicom_node.storage.series_locks.SeriesLocks`, shared
with filing), so no instance of it is filed meanwhile:

1. plan from the journal: its instance files and job output folders. Paths come from the journal,
   relative to ``storage_dir``; each must resolve inside the spool (outputs: inside ``outputs/``), or
   the series is refused (kept, reported once as an error event);
2. delete the files (a file already gone counts as deleted);
3. delete the rows and write a ``retention_purged`` event in one journal transaction;
4. remove the series' now-empty spool folders and its ``outputs/<series_uid>/`` folder.

A crash between 2 and 3 leaves rows whose files are gone: the next sweep purges them as already deleted.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from dicom_node.errors import RetentionError
from dicom_node.pipeline.loop import Clock, LoopService, LoopThread
from dicom_node.storage.journal.event_log import EventLog
from dicom_node.storage.journal.retention import ExpiredSeries, PurgeCounts, PurgePlan, blockers
from dicom_node.storage.series_locks import SeriesLocks
from dicom_node.uids import is_valid_uid

logger = logging.getLogger(__name__)

DAY_SECONDS = 86400.0
_MB = 1024 * 1024
_STUCK_LOGGED = 20  # per sweep, stuck series named one by one; then a count


@dataclass
class SweepReport:
    """What one sweep did."""

    purged: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # expired series kept, and why
    files: int = 0  # instance files deleted
    missing: int = 0  # instance files already gone
    outputs: int = 0  # output folders deleted
    bytes: int = 0


class RetentionJournal(EventLog, Protocol):
    """What retention needs of :class:`dicom_node.storage.journal.Journal`."""

    def expired_series(self, cutoff: float, series_uid: str | None = ...) -> list[ExpiredSeries]: ...
    def purge_plan(self, series_uid: str, cutoff: float) -> PurgePlan | None: ...
    def purge_series(self, plan: PurgePlan, *, now: float, note: str = ...) -> PurgeCounts | None: ...


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class RetentionService(LoopService):
    """Purges expired series (:meth:`sweep`) in its own thread."""

    def __init__(
        self,
        journal: RetentionJournal,
        *,
        storage_dir: Path,
        retention_days: float,
        locks: SeriesLocks,
        clock: Clock = time.time,
        interval: float = 600.0,
        first_delay: float = 60.0,
    ) -> None:
        if retention_days <= 0 or interval <= 0:
            raise ValueError("retention_days and interval must be positive")
        self._journal = journal
        self._storage = Path(storage_dir).resolve()
        self._spool = self._storage / "spool"
        self._outputs = self._storage / "outputs"
        self._retention = retention_days * DAY_SECONDS
        self._locks = locks
        self._clock = clock
        self._interval = interval
        self._first_delay = max(0.0, first_delay)
        self._next_sweep: float | None = None
        self._requested = threading.Event()
        self._reported: set[str] = set()  # refused series already reported by this process
        self._loop = LoopThread(
            "retention", self._step, clock=clock, max_poll=interval, error_pause=min(60.0, interval)
        )

    def start(self) -> None:
        if self._next_sweep is None:
            self._next_sweep = self._clock() + self._first_delay
        super().start()

    def wake(self) -> None:
        """Sweep now instead of at the next period."""
        self._requested.set()
        super().wake()

    def _step(self) -> float:
        now = self._clock()
        due = now if self._next_sweep is None else self._next_sweep
        if self._requested.is_set() or now >= due:
            self._requested.clear()
            try:
                self.sweep()
            finally:
                self._next_sweep = self._clock() + self._interval
            return self._next_sweep
        return due

    # ------------------------------------------------------------------ one sweep

    def sweep(self) -> SweepReport:
        """Purge every expired series whose work is finished; returns what was done."""
        now = self._clock()
        cutoff = now - self._retention
        report = SweepReport()
        stuck: list[tuple[str, str, float, str]] = []
        for row in self._journal.expired_series(cutoff):
            if self._loop.stopping:
                break
            uid = row.series_uid
            reasons = blockers(row)
            if reasons:
                report.kept[uid] = "; ".join(reasons)
                stuck.append((uid, row.state, row.last_activity, report.kept[uid]))
                continue
            try:
                self._purge(uid, cutoff, now, report)
            except Exception as exc:  # one series' failure must not stop the sweep
                logger.exception("series %s: purge failed", uid)
                report.kept[uid] = f"purge failed: {type(exc).__name__}: {exc}"
                self._report_refusal(uid, report.kept[uid], now)
        for uid, state, last, why in stuck[:_STUCK_LOGGED]:
            logger.warning(
                "series %s (%s) is past the retention period (last activity %s) but kept: %s",
                uid,
                state,
                _when(last),
                why,
            )
        if len(stuck) > _STUCK_LOGGED:
            logger.warning("%d more expired series kept for unfinished work", len(stuck) - _STUCK_LOGGED)
        if report.purged or report.kept:
            logger.info(
                "retention sweep (cutoff %s): %d series purged (%d file(s), %.1f MB, %d already missing,"
                " %d output folder(s)), %d expired series kept",
                _when(cutoff),
                len(report.purged),
                report.files,
                report.bytes / _MB,
                report.missing,
                report.outputs,
                len(report.kept),
            )
        return report

    def _purge(self, uid: str, cutoff: float, now: float, report: SweepReport) -> None:
        with self._locks.purging(uid):
            plan = self._journal.purge_plan(uid, cutoff)
            if plan is None:
                return  # changed since the listing (new instance, new job) or gone
            try:
                files = self._instance_files(plan)
                outputs = self._outputs_folder(uid)
            except RetentionError as exc:
                report.kept[uid] = str(exc)
                self._report_refusal(uid, str(exc), now)
                return
            deleted = missing = size = 0
            for path in files:
                try:
                    size += path.lstat().st_size
                    path.unlink()
                    deleted += 1
                except FileNotFoundError:
                    missing += 1
            had_outputs = outputs.is_dir()
            note = (
                f"{deleted} file(s) deleted ({size / _MB:.1f} MB), {missing} already missing,"
                f" {int(had_outputs)} output folder(s) deleted; last activity {_when(plan.last_activity)}"
            )
            if self._journal.purge_series(plan, now=now, note=note) is None:
                logger.error("series %s: its files are deleted but its rows changed; next sweep", uid)
                return
            self._remove_empty_folders(files)
            shutil.rmtree(outputs, ignore_errors=True)
        report.purged.append(uid)
        report.files += deleted
        report.missing += missing
        report.bytes += size
        report.outputs += int(had_outputs)
        logger.info(
            "series %s purged (last activity %s): %d file(s), %d already missing",
            uid,
            _when(plan.last_activity),
            deleted,
            missing,
        )

    # ------------------------------------------------------------------ paths

    def _instance_files(self, plan: PurgePlan) -> list[Path]:
        """The series' instance files, each checked to lie in a series folder of the spool (links in
        its folders resolved; a link as the file itself is removed, never its target)."""
        tmp = self._spool / ".tmp"
        files = []
        for rel in plan.instance_paths:
            raw = self._storage / rel
            folder = raw.parent.resolve()
            if (
                not folder.is_relative_to(self._spool)
                or folder == self._spool
                or folder.is_relative_to(tmp)
                or raw.name in ("", ".", "..")
            ):
                raise RetentionError(f"path {rel!r} resolves to {folder / raw.name}, outside the spool")
            files.append(folder / raw.name)
        return files

    def _outputs_folder(self, uid: str) -> Path:
        folder = self._outputs / uid
        if not is_valid_uid(uid) or (folder.exists() and not folder.resolve().is_relative_to(self._outputs)):
            raise RetentionError(f"outputs folder {folder} is not a folder of {self._outputs}")
        return folder

    def _remove_empty_folders(self, files: list[Path]) -> None:
        """Remove the series and study folders the purge left empty (filing retries a rename whose
        folder vanished, so a study folder shared with a series arriving now is safe to remove)."""
        for folder in sorted({p.parent for p in files}, key=lambda p: -len(p.parts)):
            while folder != self._spool and folder.is_relative_to(self._spool):
                try:
                    folder.rmdir()
                except OSError:
                    break  # not empty, or gone
                folder = folder.parent

    def _report_refusal(self, uid: str, why: str, now: float) -> None:
        if uid in self._reported:
            logger.debug("series %s still refused: %s", uid, why)
            return
        self._reported.add(uid)
        logger.error("series %s not purged: %s", uid, why)
        self._journal.log_event("error", "retention_refused", why, series_uid=uid, now=now)
