"""Retention: series (matched or not) and their results are deleted ``retention_days`` after their last
activity.

A background thread sweeps shortly after start and then every ``interval`` seconds (10 minutes by
default); :meth:`RetentionService.wake` asks for a sweep now. A series' last activity is the latest of
its last received instance, its jobs' ends and its deliveries' ends. An expired series is kept while
its work is unfinished (still receiving within its quiet period or not routed yet, a pending or running
job, a pending or sending delivery); each sweep names such a series in the log.

Purging one series:

1. plan from the journal: its instance files and its jobs' output folders
   (``outputs/<series_uid>/job-<id>/``). Paths come from the journal, relative to ``storage_dir``:
   an instance file must lie in the spool and an output folder under ``outputs/``, after resolving
   links, or the series is refused (kept, reported once);
2. move the files and folders into ``storage_dir/.trash/purge-<random>/``. A file already gone counts
   as deleted (a purge interrupted after step 3 of an earlier sweep leaves such rows). A spool file
   written after its journal record (mtime more than ``fresh_slack`` seconds after ``received_at``)
   is a copy of a re-sent instance not yet recorded: everything moved goes back and the series is
   kept;
3. delete the rows (instances, jobs, deliveries, series) and write a ``retention_purged`` event in
   one journal transaction, which re-checks that nothing happened since the plan (new instance, new
   job, activity after the cutoff). If something did, everything moved goes back;
4. delete the trash folder and the now-empty series and study folders of the spool and the series'
   ``outputs/`` folder.

A crash during step 2 or 3 leaves rows whose files are in the trash: the next sweep empties the trash
first and purges those rows as already deleted. Known limit: a store racing with the removal of its
(just emptied) series folder in step 4 fails with a storage error, and the sender sends it again.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicom_node.errors import RetentionError
from dicom_node.journal import Journal
from dicom_node.journal.retention import PlannedInstance, PurgePlan, blockers
from dicom_node.loop import Clock, LoopService, LoopThread
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
    outputs: int = 0  # job output folders deleted
    bytes: int = 0


@dataclass
class _Moves:
    """Files and folders moved into the trash during one purge."""

    trash: Path
    moved: list[tuple[Path, Path]] = field(default_factory=list)  # (original, in trash)
    files: int = 0
    missing: int = 0
    outputs: int = 0
    bytes: int = 0


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _move(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst``; False if ``src`` does not exist."""
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        if os.path.lexists(src):
            raise
        return False
    return True


class RetentionService(LoopService):
    """Purges expired series (:meth:`sweep`) in its own thread: ``first_delay`` seconds after
    :meth:`start`, then every ``interval`` seconds."""

    def __init__(
        self,
        journal: Journal,
        *,
        storage_dir: Path,
        retention_days: float,
        clock: Clock = time.time,
        interval: float = 600.0,
        first_delay: float = 60.0,
        fresh_slack: float = 60.0,
    ) -> None:
        if retention_days <= 0 or interval <= 0:
            raise ValueError("retention_days and interval must be positive")
        self._journal = journal
        self._storage = Path(storage_dir).resolve()
        self._spool = self._storage / "spool"
        self._outputs = self._storage / "outputs"
        self._trash_root = self._storage / ".trash"
        self._retention = retention_days * DAY_SECONDS
        self._clock = clock
        self._interval = interval
        self._first_delay = max(0.0, first_delay)
        self._slack = fresh_slack
        self._next_sweep: float | None = None
        self._requested = threading.Event()
        self._reported: set[str] = set()  # refused series already reported by this process
        self._loop = LoopThread(
            "retention", self._step, clock=clock, max_poll=interval, error_pause=min(60.0, interval)
        )

    # ------------------------------------------------------------------ lifecycle

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
        self._empty_trash()
        stuck: list[tuple[dict[str, Any], list[str]]] = []
        for row in self._journal.expired_series(cutoff):
            if self._loop.stopping:
                break
            why = blockers(row, now)
            if why:
                report.kept[row["series_uid"]] = "; ".join(why)
                stuck.append((row, why))
                continue
            self._purge(row, cutoff, now, report)
        self._log_stuck(stuck)
        if report.purged or report.kept:
            logger.info(
                "retention sweep (cutoff %s): %d series purged (%d file(s), %.1f MB, %d already"
                " missing, %d output folder(s)), %d expired series kept",
                _when(cutoff),
                len(report.purged),
                report.files,
                report.bytes / _MB,
                report.missing,
                report.outputs,
                len(report.kept),
            )
        return report

    def _purge(self, row: dict[str, Any], cutoff: float, now: float, report: SweepReport) -> None:
        uid = str(row["series_uid"])
        plan = self._journal.purge_plan(uid, row["delivery_ids"])
        if plan is None:
            return  # gone meanwhile
        try:
            instances, outputs = self._targets(plan)
        except RetentionError as exc:
            report.kept[uid] = str(exc)
            self._report_refusal(uid, str(exc), now)
            return
        try:
            moves = _Moves(self._new_trash())
        except (OSError, RetentionError) as exc:
            report.kept[uid] = f"no trash folder: {exc}"
            logger.error("series %s not purged: no trash folder: %s", uid, exc)
            return
        try:
            kept = self._move_all(plan, instances, outputs, moves)
        except OSError as exc:
            kept = f"cannot move its files to {moves.trash}: {exc}"
            logger.error("series %s kept: %s", uid, kept)
        if kept is None:
            note = (
                f"{moves.files} file(s) deleted ({moves.bytes / _MB:.1f} MB), {moves.missing} already"
                f" missing, {moves.outputs} output folder(s) deleted;"
                f" last activity {_when(plan.last_activity)}"
            )
            try:
                if self._journal.purge_series(plan, cutoff=cutoff, now=now, note=note) is None:
                    kept = "it changed while being purged (new instance or job)"
                    logger.info("series %s kept: %s", uid, kept)
            except sqlite3.Error as exc:
                kept = f"journal error: {exc}"
                logger.error("series %s kept: %s", uid, kept)
        if kept is not None:
            self._restore(uid, moves)
            report.kept[uid] = kept
            return
        self._discard(moves.trash)
        self._remove_empty_folders(instances)
        self._remove_outputs_folder(uid)
        report.purged.append(uid)
        report.files += moves.files
        report.missing += moves.missing
        report.outputs += moves.outputs
        report.bytes += moves.bytes
        logger.info(
            "series %s purged (last activity %s): %d file(s), %d already missing, %d output folder(s)",
            uid,
            _when(plan.last_activity),
            moves.files,
            moves.missing,
            moves.outputs,
        )

    def _move_all(
        self,
        plan: PurgePlan,
        instances: list[tuple[PlannedInstance, Path]],
        outputs: list[tuple[int, Path]],
        moves: _Moves,
    ) -> str | None:
        """Move a series' files into the trash; returns why the series must be kept, or None."""
        for i, (inst, path) in enumerate(instances):
            dest = moves.trash / f"{i}.dcm"
            if not _move(path, dest):
                moves.missing += 1
                continue
            moves.moved.append((path, dest))
            st = dest.lstat()
            if st.st_mtime > inst.received_at + self._slack:
                why = (
                    f"{inst.path} was written at {_when(st.st_mtime)}, after its journal record"
                    f" ({_when(inst.received_at)}): a re-sent copy not recorded yet"
                )
                logger.warning("series %s kept: %s", plan.series_uid, why)
                return why
            moves.files += 1
            moves.bytes += st.st_size
        for job_id, path in outputs:
            if _move(path, moves.trash / f"job-{job_id}"):
                moves.moved.append((path, moves.trash / f"job-{job_id}"))
                moves.outputs += 1
        return None

    # ------------------------------------------------------------------ paths

    def _targets(self, plan: PurgePlan) -> tuple[list[tuple[PlannedInstance, Path]], list[tuple[int, Path]]]:
        """The instance files and output folders of a plan, checked to lie where they may be
        deleted (links resolved; the last component itself is moved, never its link target)."""
        uid = plan.series_uid
        if not is_valid_uid(uid):
            raise RetentionError(f"series UID {uid!r} is not a valid UID; its outputs path is unsafe")
        tmp = self._spool / ".tmp"
        instances: list[tuple[PlannedInstance, Path]] = []
        for inst in plan.instances:
            raw = self._storage / inst.path
            real = raw.parent.resolve() / raw.name
            inside = real.parent.is_relative_to(self._spool) and real.parent != self._spool
            if not inside or raw.name in ("", ".", "..") or real.parent.is_relative_to(tmp):
                raise RetentionError(
                    f"instance {inst.sop_instance_uid}: path {inst.path!r} resolves to {real},"
                    f" outside the spool {self._spool}"
                )
            instances.append((inst, real))
        outputs: list[tuple[int, Path]] = []
        for job_id in plan.job_ids:
            raw = self._outputs / uid / f"job-{job_id}"
            real = raw.parent.resolve() / raw.name
            if not real.is_relative_to(self._outputs):
                raise RetentionError(f"job {job_id}: output folder {raw} resolves outside {self._outputs}")
            outputs.append((job_id, real))
        return instances, outputs

    def _log_stuck(self, stuck: list[tuple[dict[str, Any], list[str]]]) -> None:
        """Name the expired series whose unfinished work keeps them (each sweep, so it shows)."""
        for row, why in stuck[:_STUCK_LOGGED]:
            logger.warning(
                "series %s (%s) is past the retention period (last activity %s) but kept: %s",
                row["series_uid"],
                row["state"],
                _when(float(row["last_activity"])),
                "; ".join(why),
            )
        if len(stuck) > _STUCK_LOGGED:
            logger.warning("%d more expired series kept for unfinished work", len(stuck) - _STUCK_LOGGED)

    def _report_refusal(self, uid: str, why: str, now: float) -> None:
        if uid in self._reported:
            logger.debug("series %s still refused: %s", uid, why)
            return
        self._reported.add(uid)
        logger.error("series %s not purged: %s", uid, why)
        self._journal.log_event("error", "retention_refused", why, series_uid=uid, now=now)

    # ------------------------------------------------------------------ trash

    def _new_trash(self) -> Path:
        self._trash_root.mkdir(exist_ok=True)
        if self._trash_root.is_symlink() or self._trash_root.resolve() != self._trash_root:
            raise RetentionError(f"{self._trash_root} is a link; it must be a folder in storage_dir")
        trash = self._trash_root / f"purge-{uuid.uuid4().hex}"
        trash.mkdir()
        return trash

    def _empty_trash(self) -> None:
        """Delete what interrupted purges left in the trash."""
        if not self._trash_root.is_dir() or self._trash_root.is_symlink():
            return
        for entry in self._trash_root.iterdir():
            if entry.name.startswith("purge-"):
                logger.info("retention: removing %s left by an interrupted purge", entry)
                self._discard(entry)

    def _discard(self, path: Path) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            logger.error("retention: cannot delete %s (next sweep tries again): %s", path, exc)

    def _restore(self, uid: str, moves: _Moves) -> None:
        """Put moved files back where they were; a place taken meanwhile keeps its newer content."""
        failed: list[str] = []
        for original, trashed in reversed(moves.moved):
            try:
                if os.path.lexists(original):
                    continue  # replaced by a newer copy meanwhile: ours is stale
                original.parent.mkdir(parents=True, exist_ok=True)
                if trashed.is_dir() and not trashed.is_symlink():
                    os.rename(trashed, original)
                else:
                    os.link(trashed, original, follow_symlinks=False)  # never over a newer file
            except FileExistsError:
                continue
            except OSError as exc:
                failed.append(f"{original}: {exc}")
        if not failed:
            self._discard(moves.trash)
            return
        kept = moves.trash.with_name(moves.trash.name.replace("purge-", "unrestored-", 1))
        try:
            os.rename(moves.trash, kept)  # the next sweep empties only purge-* folders
        except OSError as exc:
            failed.append(f"renaming {moves.trash}: {exc}")
            kept = moves.trash
        message = f"{len(failed)} file(s) could not be put back and are in {kept}: {'; '.join(failed)}"
        logger.error("series %s: %s", uid, message)
        self._journal.log_event("error", "retention_restore_failed", message, series_uid=uid)

    # ------------------------------------------------------------------ folders

    def _remove_empty_folders(self, instances: list[tuple[PlannedInstance, Path]]) -> None:
        """Remove the series and study folders of the spool that the purge left empty."""
        for folder in sorted({path.parent for _, path in instances}, key=lambda p: -len(p.parts)):
            while folder != self._spool and folder.is_relative_to(self._spool):
                try:
                    folder.rmdir()
                except OSError:
                    break  # not empty (another series, a new instance) or gone
                folder = folder.parent

    def _remove_outputs_folder(self, uid: str) -> None:
        folder = self._outputs / uid
        if not folder.is_dir() or folder.is_symlink() or not folder.resolve().is_relative_to(self._outputs):
            return
        self._discard(folder)
