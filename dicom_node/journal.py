"""The journal: one SQLite database (WAL) that is the source of truth for instances, series, jobs,
deliveries and events.

Design notes
- One connection guarded by a lock, shared by the node's threads. Every public method is one
  transaction. Readers in other processes (``dicom-node status``) open their own connection.
- ``synchronous=NORMAL``: a committed transaction survives a crash of the process (``kill -9``); after a
  power loss the last transactions may be missing, which start-up repairs by re-indexing spool files
  that are not in the journal (the spool's files are fsynced before they are acknowledged).
- Completion timers are not stored as deadlines: they derive from ``series.last_received`` and the
  rule's quiet period, so a restart resumes them by itself.
- Time is passed in (``now``) where a method's result depends on it, so tests can drive the clock.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid    TEXT NOT NULL,
    series_uid       TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    path             TEXT NOT NULL,      -- relative to storage_dir
    size             INTEGER NOT NULL,
    called_ae        TEXT NOT NULL,
    calling_ae       TEXT NOT NULL,
    association_id   TEXT,
    received_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);

CREATE TABLE IF NOT EXISTS series (
    series_uid         TEXT PRIMARY KEY,
    study_uid          TEXT NOT NULL,
    modality           TEXT NOT NULL DEFAULT '',
    series_description TEXT NOT NULL DEFAULT '',
    called_ae          TEXT NOT NULL,
    calling_ae         TEXT NOT NULL,
    first_received     REAL NOT NULL,
    last_received      REAL NOT NULL,
    instance_count     INTEGER NOT NULL DEFAULT 0,
    expected_count     INTEGER,            -- from ImagesInAcquisition when the sender gives it
    generation         INTEGER NOT NULL DEFAULT 0,  -- bumped by every new or replaced instance
    state              TEXT NOT NULL DEFAULT 'receiving',
        -- receiving | queued (a job exists for the current generation) | unmatched | error
    rules              TEXT,               -- JSON list of matched rule names; NULL until routed
    quiet_seconds      REAL,               -- from the matched rule(s) when routed (the longest)
    complete_on_release INTEGER NOT NULL DEFAULT 0,
    use_expected_count INTEGER NOT NULL DEFAULT 1,
    last_association_id TEXT,
    released           INTEGER NOT NULL DEFAULT 0,  -- the last delivering association was released
    routing_note       TEXT                -- why it matched / matched nothing
);
CREATE INDEX IF NOT EXISTS series_by_state ON series(state);

CREATE TABLE IF NOT EXISTS jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid   TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    rule_name    TEXT NOT NULL,
    models       TEXT NOT NULL,            -- JSON list of model ids/aliases (a cascade if several)
    destinations TEXT NOT NULL,            -- JSON list of destination names
    args         TEXT NOT NULL DEFAULT '{}',  -- JSON inference argument overrides
    trigger      TEXT NOT NULL,  -- quiet_period | association_released | expected_count | manual
    state        TEXT NOT NULL DEFAULT 'pending',
        -- pending | running | done | empty | failed | superseded
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    error        TEXT,
    outputs      TEXT,                     -- JSON list of {path, sop_instance_uid, sop_class_uid}
    timings      TEXT,                     -- JSON {stage: seconds}
    not_before   REAL                      -- a retried job waits until then (NULL: at once)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_by_series ON jobs(series_uid);

CREATE TABLE IF NOT EXISTS deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           INTEGER NOT NULL,
    series_uid       TEXT NOT NULL,
    destination      TEXT NOT NULL,
    path             TEXT NOT NULL,        -- relative to storage_dir
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',
        -- pending | sending | done | failed | superseded
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    done_at          REAL
);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries(state, next_attempt_at);

CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         REAL NOT NULL,
    level      TEXT NOT NULL,              -- info | warning | error
    kind       TEXT NOT NULL,              -- e.g. store_rejected, job_failed, delivery_failed
    series_uid TEXT,
    job_id     INTEGER,
    message    TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    path: str
    size: int
    called_ae: str
    calling_ae: str
    association_id: str | None
    received_at: float
    modality: str = ""
    series_description: str = ""
    expected_count: int | None = None


@dataclass(frozen=True)
class JobSpec:
    """What a matched rule asks for a completed series."""

    rule_name: str
    models: Sequence[str]
    destinations: Sequence[str]
    args: Mapping[str, Any]


@dataclass(frozen=True)
class RecordOutcome:
    """What :meth:`Journal.record_instance` did."""

    replaced: bool  # the SOP Instance UID was known already
    old_path: str | None  # the previous file, when it lay elsewhere (caller deletes it)
    late: bool  # the series already had a job for an earlier generation


def _row_to_dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return None if row is None else {k: row[k] for k in row.keys()}  # noqa: SIM118


class Journal:
    """Thread-safe access to the journal database at ``path``."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.executescript(_SCHEMA)
            self._add_missing_columns()
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _add_missing_columns(self) -> None:
        """Columns added after a database was created (additive schema changes)."""
        have = {r["name"] for r in self._conn.execute("PRAGMA table_info(jobs)").fetchall()}
        if "not_before" not in have:
            self._conn.execute("ALTER TABLE jobs ADD COLUMN not_before REAL")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One IMMEDIATE transaction under the lock."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [{k: r[k] for k in r.keys()} for r in rows]  # noqa: SIM118

    # ------------------------------------------------------------------ instances and series

    def record_instance(self, rec: InstanceRecord) -> RecordOutcome:
        """Record a filed instance and update its series, in one transaction.

        A known SOP Instance UID replaces the earlier record (no duplicate slices). Any new or replaced
        instance bumps the series generation and puts the series back to ``receiving``, which restarts
        its completion timer; if a job already ran for the series this is a late arrival.
        """
        with self._tx() as cur:
            old = cur.execute(
                "SELECT path, series_uid FROM instances WHERE sop_instance_uid = ?",
                (rec.sop_instance_uid,),
            ).fetchone()
            cur.execute(
                "INSERT OR REPLACE INTO instances (sop_instance_uid, sop_class_uid, series_uid,"
                " study_uid, transfer_syntax, path, size, called_ae, calling_ae, association_id,"
                " received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.sop_instance_uid,
                    rec.sop_class_uid,
                    rec.series_uid,
                    rec.study_uid,
                    rec.transfer_syntax,
                    rec.path,
                    rec.size,
                    rec.called_ae,
                    rec.calling_ae,
                    rec.association_id,
                    rec.received_at,
                ),
            )
            series = cur.execute(
                "SELECT state, generation FROM series WHERE series_uid = ?", (rec.series_uid,)
            ).fetchone()
            had_job = False
            if series is None:
                cur.execute(
                    "INSERT INTO series (series_uid, study_uid, modality, series_description,"
                    " called_ae, calling_ae, first_received, last_received, instance_count,"
                    " expected_count, generation, state, last_association_id)"
                    " VALUES (?,?,?,?,?,?,?,?,1,?,1,'receiving',?)",
                    (
                        rec.series_uid,
                        rec.study_uid,
                        rec.modality,
                        rec.series_description,
                        rec.called_ae,
                        rec.calling_ae,
                        rec.received_at,
                        rec.received_at,
                        rec.expected_count,
                        rec.association_id,
                    ),
                )
            else:
                had_job = (
                    cur.execute(
                        "SELECT 1 FROM jobs WHERE series_uid = ? LIMIT 1", (rec.series_uid,)
                    ).fetchone()
                    is not None
                )
                count = cur.execute(
                    "SELECT COUNT(*) FROM instances WHERE series_uid = ?", (rec.series_uid,)
                ).fetchone()[0]
                # an unmatched series is routed again (rules may have changed since)
                cur.execute(
                    "UPDATE series SET last_received = MAX(last_received, ?), instance_count = ?,"
                    " expected_count = COALESCE(?, expected_count), generation = generation + 1,"
                    " state = 'receiving', released = 0, last_association_id = ?,"
                    " rules = CASE WHEN state = 'unmatched' THEN NULL ELSE rules END"
                    " WHERE series_uid = ?",
                    (
                        rec.received_at,
                        count,
                        rec.expected_count,
                        rec.association_id,
                        rec.series_uid,
                    ),
                )
            if old is not None and old["series_uid"] != rec.series_uid:
                # the instance moved series: recount the old one
                cur.execute(
                    "UPDATE series SET instance_count = (SELECT COUNT(*) FROM instances"
                    " WHERE series_uid = ?) WHERE series_uid = ?",
                    (old["series_uid"], old["series_uid"]),
                )
        old_path = old["path"] if old is not None and old["path"] != rec.path else None
        return RecordOutcome(replaced=old is not None, old_path=old_path, late=had_job)

    def has_instance(self, sop_instance_uid: str) -> bool:
        rows = self._query("SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return bool(rows)

    def known_paths(self) -> set[str]:
        """Relative paths of every recorded instance (for the start-up spool reconciliation)."""
        return {r["path"] for r in self._query("SELECT path FROM instances")}

    def instances_of_series(self, series_uid: str) -> list[dict[str, Any]]:
        return self._query(
            "SELECT * FROM instances WHERE series_uid = ? ORDER BY received_at, sop_instance_uid",
            (series_uid,),
        )

    def get_series(self, series_uid: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM series WHERE series_uid = ?", (series_uid,))
        return _decode_series(rows[0]) if rows else None

    def list_series(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM series ORDER BY last_received DESC LIMIT ?", (limit,))
        return [_decode_series(r) for r in rows]

    def unrouted_series(self) -> list[dict[str, Any]]:
        """Series receiving instances that have no rule decision yet."""
        rows = self._query(
            "SELECT * FROM series WHERE state = 'receiving' AND rules IS NULL ORDER BY first_received"
        )
        return [_decode_series(r) for r in rows]

    def set_routing(
        self,
        series_uid: str,
        *,
        rules: Sequence[str],
        quiet_seconds: float = 0.0,
        complete_on_release: bool = False,
        use_expected_count: bool = True,
        note: str = "",
    ) -> None:
        """Store a routing decision: the names of the matched rules (in order). No rule marks the
        series ``unmatched`` (kept for the retention period, never sent)."""
        with self._tx() as cur:
            if not rules:
                cur.execute(
                    "UPDATE series SET state = 'unmatched', rules = NULL, routing_note = ?"
                    " WHERE series_uid = ? AND state = 'receiving'",
                    (note, series_uid),
                )
            else:
                cur.execute(
                    "UPDATE series SET rules = ?, quiet_seconds = ?, complete_on_release = ?,"
                    " use_expected_count = ?, routing_note = ? WHERE series_uid = ?",
                    (
                        json.dumps(list(rules)),
                        quiet_seconds,
                        int(complete_on_release),
                        int(use_expected_count),
                        note,
                        series_uid,
                    ),
                )

    def clear_routing_of_receiving(self) -> int:
        """Forget the rules of series still receiving (after a rules reload), so they are routed
        again. Returns how many."""
        with self._tx() as cur:
            cur.execute("UPDATE series SET rules = NULL WHERE state = 'receiving' AND rules IS NOT NULL")
            return cur.rowcount

    def mark_association_released(self, association_id: str) -> int:
        """Note that an association ended; series it delivered last may complete on release."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE series SET released = 1 WHERE last_association_id = ? AND state = 'receiving'",
                (association_id,),
            )
            return cur.rowcount

    def due_series(self, now: float) -> list[dict[str, Any]]:
        """Routed series whose completion condition holds at ``now``, each with a ``trigger``:
        ``expected_count`` (all announced instances arrived), ``association_released`` (rule
        option) or ``quiet_period`` (no new instance for the rule's quiet seconds)."""
        rows = self._query("SELECT * FROM series WHERE state = 'receiving' AND rules IS NOT NULL")
        due = []
        for row in rows:
            _decode_series(row)
            if (
                row["use_expected_count"]
                and row["expected_count"]
                and row["instance_count"] >= row["expected_count"]
            ):
                row["trigger"] = "expected_count"
            elif row["complete_on_release"] and row["released"]:
                row["trigger"] = "association_released"
            elif row["last_received"] + (row["quiet_seconds"] or 0.0) <= now:
                row["trigger"] = "quiet_period"
            else:
                continue
            due.append(row)
        return due

    def next_due_time(self) -> float | None:
        """The earliest time a routed, receiving series can complete by its quiet period."""
        rows = self._query(
            "SELECT MIN(last_received + COALESCE(quiet_seconds, 0)) AS t FROM series"
            " WHERE state = 'receiving' AND rules IS NOT NULL"
        )
        value = rows[0]["t"] if rows else None
        return None if value is None else float(value)

    # ------------------------------------------------------------------ jobs

    def create_jobs(
        self,
        series_uid: str,
        *,
        generation: int,
        jobs: Sequence[JobSpec],
        trigger: str,
        now: float,
    ) -> list[int]:
        """Queue one job per matched rule for ``generation`` of a series, if the series is still at
        that generation and receiving. Earlier pending jobs of the series are superseded. Returns the
        job ids, or [] if the series moved on meanwhile (a new instance arrived)."""
        ids: list[int] = []
        with self._tx() as cur:
            row = cur.execute(
                "SELECT generation, state FROM series WHERE series_uid = ?", (series_uid,)
            ).fetchone()
            if row is None or row["generation"] != generation or row["state"] != "receiving":
                return []
            cur.execute(
                "UPDATE jobs SET state = 'superseded', finished_at = ?"
                " WHERE series_uid = ? AND state = 'pending'",
                (now, series_uid),
            )
            for spec in jobs:
                cur.execute(
                    "INSERT INTO jobs (series_uid, generation, rule_name, models, destinations,"
                    " args, trigger, state, created_at) VALUES (?,?,?,?,?,?,?,'pending',?)",
                    (
                        series_uid,
                        generation,
                        spec.rule_name,
                        json.dumps(list(spec.models)),
                        json.dumps(list(spec.destinations)),
                        json.dumps(dict(spec.args), sort_keys=True),
                        trigger,
                        now,
                    ),
                )
                ids.append(int(cur.lastrowid or 0))
            cur.execute("UPDATE series SET state = 'queued' WHERE series_uid = ?", (series_uid,))
        return ids

    def claim_job(self, now: float) -> dict[str, Any] | None:
        """Atomically take the oldest pending job that is due (``not_before``) and mark it running."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT * FROM jobs WHERE state = 'pending' AND COALESCE(not_before, 0) <= ?"
                " ORDER BY id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            cur.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now, row["id"]),
            )
        job = _row_to_dict(row)
        assert job is not None
        job["state"] = "running"
        job["attempts"] += 1
        return _decode_job(job)

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _decode_job(rows[0]) if rows else None

    def list_jobs(self, limit: int = 100, state: str | None = None) -> list[dict[str, Any]]:
        if state is None:
            rows = self._query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?", (state, limit))
        return [_decode_job(r) for r in rows]

    def finish_job(
        self,
        job_id: int,
        *,
        state: str,
        now: float,
        outputs: Sequence[dict[str, Any]] = (),
        timings: dict[str, float] | None = None,
        error: str | None = None,
        deliveries: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Close a running job (``done``, ``empty`` or ``failed``) and queue its deliveries, in one
        transaction. If the series received new instances since the job's generation, the job is
        ``superseded`` instead and nothing is queued (a newer job will deliver). Each delivery is a
        dict with destination, path, sop_instance_uid, sop_class_uid; queuing supersedes pending
        deliveries of the same SOP instance to the same destination. Returns whether deliveries were
        queued (or would have been, for an empty list)."""
        with self._tx() as cur:
            job = cur.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                raise KeyError(job_id)
            series = cur.execute(
                "SELECT generation FROM series WHERE series_uid = ?", (job["series_uid"],)
            ).fetchone()
            current = series is not None and series["generation"] == job["generation"]
            final_state = state if current or state == "failed" else "superseded"
            cur.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, outputs = ?, timings = ?, error = ?"
                " WHERE id = ?",
                (
                    final_state,
                    now,
                    json.dumps(list(outputs)),
                    json.dumps(timings or {}),
                    error,
                    job_id,
                ),
            )
            if final_state == "superseded":
                return False
            for d in deliveries:
                cur.execute(
                    "UPDATE deliveries SET state = 'superseded' WHERE destination = ?"
                    " AND sop_instance_uid = ? AND state = 'pending'",
                    (d["destination"], d["sop_instance_uid"]),
                )
                cur.execute(
                    "INSERT INTO deliveries (job_id, series_uid, destination, path,"
                    " sop_instance_uid, sop_class_uid, state, next_attempt_at, created_at)"
                    " VALUES (?,?,?,?,?,?,'pending',?,?)",
                    (
                        job_id,
                        job["series_uid"],
                        d["destination"],
                        d["path"],
                        d["sop_instance_uid"],
                        d["sop_class_uid"],
                        now,
                        now,
                    ),
                )
        return True

    def retry_job(self, job_id: int, *, error: str, not_before: float | None = None) -> None:
        """Put a running job back to pending (e.g. not enough GPU memory now), to be claimed again
        at ``not_before`` (at once when None)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE jobs SET state = 'pending', error = ?, not_before = ?"
                " WHERE id = ? AND state = 'running'",
                (error, not_before, job_id),
            )

    def next_job_time(self) -> float | None:
        """When the earliest pending job may be claimed (None: no pending job)."""
        rows = self._query("SELECT MIN(COALESCE(not_before, 0)) AS t FROM jobs WHERE state = 'pending'")
        value = rows[0]["t"] if rows else None
        return None if value is None else float(value)

    # ------------------------------------------------------------------ deliveries

    def claim_deliveries(
        self, now: float, *, destination: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Take due pending deliveries (of one destination when given) and mark them sending."""
        with self._tx() as cur:
            if destination is None:
                rows = cur.execute(
                    "SELECT * FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ?"
                    " ORDER BY next_attempt_at, id LIMIT ?",
                    (now, limit),
                ).fetchall()
            else:
                rows = cur.execute(
                    "SELECT * FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ?"
                    " AND destination = ? ORDER BY next_attempt_at, id LIMIT ?",
                    (now, destination, limit),
                ).fetchall()
            for row in rows:
                cur.execute(
                    "UPDATE deliveries SET state = 'sending', attempts = attempts + 1 WHERE id = ?",
                    (row["id"],),
                )
        out = []
        for row in rows:
            d = _row_to_dict(row)
            assert d is not None
            d["state"] = "sending"
            d["attempts"] += 1
            out.append(d)
        return out

    def finish_delivery(
        self,
        delivery_id: int,
        *,
        ok: bool,
        now: float,
        status: int | None = None,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> None:
        """Record a delivery attempt: done, pending again at ``retry_at``, or failed for good."""
        with self._tx() as cur:
            if ok:
                state, next_at, done_at = "done", now, now
            elif retry_at is not None:
                state, next_at, done_at = "pending", retry_at, None
            else:
                state, next_at, done_at = "failed", now, now
            cur.execute(
                "UPDATE deliveries SET state = ?, next_attempt_at = ?, done_at = ?,"
                " last_status = ?, last_error = ? WHERE id = ?",
                (state, next_at, done_at, status, error, delivery_id),
            )

    def list_deliveries(self, limit: int = 100, state: str | None = None) -> list[dict[str, Any]]:
        if state is None:
            return self._query("SELECT * FROM deliveries ORDER BY id DESC LIMIT ?", (limit,))
        return self._query(
            "SELECT * FROM deliveries WHERE state = ? ORDER BY id DESC LIMIT ?", (state, limit)
        )

    def next_delivery_time(self) -> float | None:
        rows = self._query("SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE state = 'pending'")
        value = rows[0]["t"] if rows else None
        return None if value is None else float(value)

    # ------------------------------------------------------------------ events and recovery

    def log_event(
        self,
        level: str,
        kind: str,
        message: str,
        *,
        series_uid: str | None = None,
        job_id: int | None = None,
        now: float | None = None,
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO events (at, level, kind, series_uid, job_id, message) VALUES (?,?,?,?,?,?)",
                (time.time() if now is None else now, level, kind, series_uid, job_id, message),
            )

    def recent_events(self, limit: int = 20, level: str | None = None) -> list[dict[str, Any]]:
        if level is None:
            return self._query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return self._query("SELECT * FROM events WHERE level = ? ORDER BY id DESC LIMIT ?", (level, limit))

    def recover(self) -> dict[str, int]:
        """At start-up: work that was in flight when the process died goes back to the queue."""
        with self._tx() as cur:
            cur.execute("UPDATE jobs SET state = 'pending' WHERE state = 'running'")
            jobs = cur.rowcount
            cur.execute("UPDATE deliveries SET state = 'pending' WHERE state = 'sending'")
            deliveries = cur.rowcount
        if jobs or deliveries:
            logger.info("recovered %d running job(s) and %d delivery(ies)", jobs, deliveries)
        return {"jobs": jobs, "deliveries": deliveries}

    def counts(self) -> dict[str, dict[str, int]]:
        """Row counts per state, for status displays and metrics."""
        out: dict[str, dict[str, int]] = {}
        for table in ("series", "jobs", "deliveries"):
            rows = self._query(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state")
            out[table] = {r["state"]: r["n"] for r in rows}
        out["instances"] = {"total": self._query("SELECT COUNT(*) AS n FROM instances")[0]["n"]}
        return out


def _decode_job(job: dict[str, Any]) -> dict[str, Any]:
    for key in ("models", "destinations", "args", "outputs", "timings"):
        if isinstance(job.get(key), str):
            job[key] = json.loads(job[key])
    return job


def _decode_series(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("rules"), str):
        row["rules"] = json.loads(row["rules"])
    return row
