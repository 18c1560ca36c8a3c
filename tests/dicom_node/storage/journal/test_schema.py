"""The schema: a new database is WAL with its version; an old one gains the columns added since."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dicom_node.storage.journal import SCHEMA_VERSION, Journal, JournalCounts
from tests.support.journal_rows import SA, instance_record

# the jobs table as the first schema version created it, before jobs.not_before existed
OLD_JOBS_TABLE = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, series_uid TEXT NOT NULL, generation INTEGER NOT NULL,
    rule_name TEXT NOT NULL, models TEXT NOT NULL, destinations TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}', trigger TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    error TEXT, outputs TEXT, timings TEXT
);
"""


def test_new_database_is_wal_with_schema_version(journal: Journal) -> None:
    assert journal._query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    meta = journal._query("SELECT value FROM meta WHERE key = 'schema_version'")
    assert meta == [{"value": str(SCHEMA_VERSION)}]
    assert journal.counts() == JournalCounts(series={}, jobs={}, deliveries={}, instances=0)


def test_old_database_without_not_before_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_JOBS_TABLE)
    conn.execute(
        "INSERT INTO jobs (series_uid, generation, rule_name, models, destinations, trigger, created_at)"
        " VALUES (?, 1, 'r', '[\"demo\"]', '[\"pacs\"]', 'manual', 5.0)",
        (SA,),
    )
    conn.commit()
    assert "not_before" not in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    conn.close()

    j = Journal(path)
    try:
        assert "not_before" in {r["name"] for r in j._query("PRAGMA table_info(jobs)")}
        job = j.claim_job(now=10.0)  # the old row survived and is claimable (NULL not_before)
        assert job is not None and job.models == ("demo",) and job.not_before is None
        assert job.inputs == ()  # jobs.inputs added: an old job is a one-series job
        j.retry_job(job.id, error="busy", not_before=50.0)
        assert j.claim_job(now=20.0) is None
        assert j.next_job_time() == 50.0
    finally:
        j.close()
    Journal(path).close()  # opening again migrates nothing and fails nothing


def test_a_journal_from_before_digests_counts_the_first_resend_as_changed(tmp_path: Path) -> None:
    """Rows written with a SHA-256 (an older node) have no digest: the first re-send of such an
    instance is a change (one more inference), never a false "unchanged"; the next is unchanged."""
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    j.record_instance(instance_record("1.1", at=100.0))
    j.close()
    conn = sqlite3.connect(path)  # as the older node left it: a hash in sha256, none in digest
    conn.execute("UPDATE instances SET sha256 = 'ab' || digest, digest = NULL")
    conn.commit()
    conn.close()
    j = Journal(path)
    try:
        first = j.record_instance(instance_record("1.1", at=200.0))
        second = j.record_instance(instance_record("1.1", at=300.0))
    finally:
        j.close()
    assert (first.replaced, first.unchanged) == (True, False)
    assert (second.replaced, second.unchanged) == (True, True)
