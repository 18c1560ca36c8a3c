"""The journal's SQLite schema and its additive migrations."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1

SCHEMA = """
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
    received_at      REAL NOT NULL,
    acquisition      TEXT NOT NULL DEFAULT '',  -- AcquisitionNumber (0020,0012) as sent
    images_in_acquisition INTEGER,      -- ImagesInAcquisition (0020,1002) as sent
    digest           TEXT                -- of the data set bytes as received (no file meta), see
                                         -- dicom_node.storage.digest; journals made before it
                                         -- also have sha256 (no longer written or read)
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_by_calling_ae ON instances(calling_ae);

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
    routing_note       TEXT,               -- why it matched / matched nothing
    completions        INTEGER NOT NULL DEFAULT 0,  -- times it completed (late ones: quiet period only)
    complete_study     INTEGER NOT NULL DEFAULT 0   -- completes when its whole study is quiet
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
    not_before   REAL,                     -- a retried job waits until then (NULL: at once)
    forward      INTEGER NOT NULL DEFAULT 0,  -- forwards the received instances (no models)
    inputs       TEXT  -- a study job (rule with channels): JSON [[series_uid, generation], ...] per
                       -- channel, the first = (series_uid, generation); NULL: the series alone
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
CREATE INDEX IF NOT EXISTS deliveries_by_series ON deliveries(series_uid);

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


# (table, column, declaration) added after the first schema, in order
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("jobs", "not_before", "REAL"),
    ("instances", "acquisition", "TEXT NOT NULL DEFAULT ''"),
    ("instances", "images_in_acquisition", "INTEGER"),
    ("instances", "sha256", "TEXT"),
    ("instances", "digest", "TEXT"),
    ("series", "completions", "INTEGER NOT NULL DEFAULT 0"),
    ("series", "complete_study", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "forward", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "inputs", "TEXT"),
)


def migrate(conn: sqlite3.Connection) -> None:
    """Create missing tables and add columns introduced after a database was created."""
    conn.executescript(SCHEMA)
    for table, column, declaration in _ADDED_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )
