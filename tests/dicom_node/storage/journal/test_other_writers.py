"""Several processes write one journal (node.receive_processes): a write waits for another connection's
transaction instead of failing with 'database is locked'."""

from __future__ import annotations

import sqlite3
import threading

from dicom_node.storage.journal import Journal


def test_a_write_waits_for_another_connections_transaction(journal: Journal) -> None:
    other = sqlite3.connect(journal.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            journal.log_event("info", "test", "written while another connection wrote")
        except BaseException as exc:
            errors.append(exc)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not done.wait(0.3), "the write did not wait for the other transaction"
    finally:
        other.execute("COMMIT")
        other.close()
    assert done.wait(10)
    writer.join(10)
    assert errors == []
    assert any(e.message == "written while another connection wrote" for e in journal.recent_events(limit=10))
