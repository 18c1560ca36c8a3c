"""The journal as a whole: recovery after a restart, events and counts, read-only readers (WAL) and
concurrent writers."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from dicom_node.storage.journal import Journal
from tests.support.journal_rows import (
    SA,
    SB,
    SC,
    delivery,
    finished_job_with,
    instance_record,
    kept_counts,
    queued,
    true_counts,
)


def test_recover_requeues_running_jobs_and_sending_deliveries(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    finished_job_with(journal, [delivery("2.25.1"), delivery("2.25.2")])
    journal.claim_deliveries(now=300.0, limit=1)
    journal.record_instance(instance_record("2.1", SB))
    queued(journal, SB)
    running = journal.claim_job(now=310.0)
    assert running is not None
    assert journal.counts().jobs == {"done": 1, "running": 1}
    with caplog.at_level(logging.INFO, logger="dicom_node.storage.journal"):
        assert journal.recover() == (1, 1)
    assert "recovered 1 running job(s) and 1 delivery(ies)" in caplog.text
    counts = journal.counts()
    assert counts.jobs == {"done": 1, "pending": 1}
    assert counts.deliveries == {"pending": 2}
    assert counts.series == {"queued": 2} and counts.instances == 2
    again = journal.claim_job(now=311.0)
    assert again is not None and (again.id, again.attempts) == (running.id, 2)
    journal.recover()
    assert journal.recover() == (0, 0)


def test_events_newest_first_with_level_filter(journal: Journal) -> None:
    journal.log_event("info", "series_unmatched", "no rule", series_uid=SA, now=1.0)
    journal.log_event("error", "job_failed", "job 3 failed", job_id=3, now=2.0)
    journal.log_event("warning", "delivery_failed", "pacs down")
    events = journal.recent_events()
    assert [e.kind for e in events] == ["delivery_failed", "job_failed", "series_unmatched"]
    assert events[0].at > 1_600_000_000  # defaults to the wall clock
    assert (events[1].job_id, events[1].series_uid, events[2].series_uid) == (3, None, SA)
    assert [e.message for e in journal.recent_events(level="error")] == ["job 3 failed"]
    assert [e.kind for e in journal.recent_events(limit=1)] == ["delivery_failed"]


def test_readonly_journal_sees_commits_and_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    writer = Journal(path)
    reader = Journal(path, readonly=True)
    try:
        assert reader.counts().instances == 0
        writer.record_instance(instance_record("1.1"))
        writer.log_event("error", "store_rejected", "bad UID")
        assert reader.counts().instances == 1  # committed after the reader opened
        assert reader.recent_events()[0].kind == "store_rejected"
        writer.record_instance(instance_record("1.2"))
        s = reader.get_series(SA)
        assert s is not None and s.instance_count == 2
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.log_event("info", "x", "y")
        assert writer.recent_events(limit=5)[0].kind == "store_rejected"
    finally:
        reader.close()
        writer.close()


@pytest.mark.parametrize("folder", ["data#1", "what?", "100%", "with space"])
def test_readonly_journal_in_a_folder_with_uri_characters(tmp_path: Path, folder: str) -> None:
    """The read-only connection goes through an SQLite URI: '#', '?' and '%' in the storage folder
    must not cut the path short (and open or create another file) nor fail."""
    path = tmp_path / folder / "journal.sqlite"
    writer = Journal(path)
    try:
        writer.record_instance(instance_record("1.1"))
        reader = Journal(path, readonly=True)
        try:
            assert reader.counts().instances == 1
        finally:
            reader.close()
    finally:
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]  # no stray database beside it


def test_readonly_journal_does_not_create_a_database(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        Journal(tmp_path / "absent.sqlite", readonly=True)
    assert not (tmp_path / "absent.sqlite").exists()


def test_concurrent_threads_lose_no_instance(tmp_path: Path) -> None:
    """Eight threads share one Journal and two more use their own connection to the same file."""
    path = tmp_path / "journal.sqlite"
    shared = Journal(path)
    own = [Journal(path) for _ in range(2)]
    per_thread = 40
    errors: list[BaseException] = []
    start = threading.Barrier(10)

    def record(j: Journal, t: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(per_thread):
                j.record_instance(instance_record(f"9.{t}.{i}", [SA, SB, SC][(t + i) % 3], at=float(i)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    journals = [shared] * 8 + own
    threads = [threading.Thread(target=record, args=(j, t)) for t, j in enumerate(journals)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)
        total = 10 * per_thread
        assert shared.counts().instances == total
        assert kept_counts(shared) == true_counts(shared)
        assert sum(kept_counts(shared).values()) == total
        generations = {s.series_uid: s.generation for s in shared.list_series()}
        assert generations == kept_counts(shared)  # every record bumped its series exactly once
    finally:
        for j in [shared, *own]:
            j.close()
