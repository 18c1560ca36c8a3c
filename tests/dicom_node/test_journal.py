"""The journal on its own: every public method, the state machines of series, jobs and deliveries,
record_instance's replace / move / late-arrival semantics and its incremental instance count,
completion triggers with a driven clock, the not_before migration, read-only readers (WAL) and
concurrent writers. Times are plain numbers passed in; nothing sleeps."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from dicom_node.journal import SCHEMA_VERSION, InstanceRecord, JobSpec, Journal, RecordOutcome

CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
EVLE = "1.2.840.10008.1.2.1"
STUDY = "1.2.826.0.1.3680043.9.7777.1"
SA = "1.2.826.0.1.3680043.9.7777.1.1"
SB = "1.2.826.0.1.3680043.9.7777.1.2"
SC = "1.2.826.0.1.3680043.9.7777.1.3"
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
SPEC = JobSpec("ct-demo", ["demo"], ["pacs"], {"tta": False})


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    j = Journal(tmp_path / "var" / "journal.sqlite")
    yield j
    j.close()


def rec(
    sop: str,
    series: str = SA,
    *,
    at: float = 100.0,
    path: str | None = None,
    assoc: str | None = "assoc-1",
    expected: int | None = None,
    size: int = 10,
) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid=CT,
        series_uid=series,
        study_uid=STUDY,
        transfer_syntax=EVLE,
        path=path or f"spool/{STUDY}/{series}/{sop}.dcm",
        size=size,
        called_ae="NNUNET",
        calling_ae="STORESCU",
        association_id=assoc,
        received_at=at,
        modality="CT",
        series_description="Abdomen",
        expected_count=expected,
    )


def delivery(sop: str = "2.25.1", destination: str = "pacs") -> dict[str, str]:
    return {
        "destination": destination,
        "path": f"outputs/{sop}.dcm",
        "sop_instance_uid": sop,
        "sop_class_uid": SEG,
    }


def pick(row: dict[str, Any] | None, *keys: str) -> tuple[Any, ...]:
    """The values of ``keys`` in a journal row (which must exist)."""
    assert row is not None
    return tuple(row[k] for k in keys)


def true_counts(j: Journal) -> dict[str, int]:
    rows = j._query("SELECT series_uid, COUNT(*) AS n FROM instances GROUP BY series_uid")
    return {r["series_uid"]: r["n"] for r in rows}


def kept_counts(j: Journal) -> dict[str, int]:
    return {s["series_uid"]: s["instance_count"] for s in j.list_series() if s["instance_count"]}


def queued(j: Journal, series: str = SA, *, now: float = 200.0, n: int = 1) -> list[int]:
    """Route the series and queue ``n`` jobs for its current generation."""
    j.set_routing(series, rules=["ct-demo"], quiet_seconds=10)
    s = j.get_series(series)
    assert s is not None
    return j.create_jobs(series, generation=s["generation"], jobs=[SPEC] * n, trigger="quiet_period", now=now)


# ------------------------------------------------------------------ schema


def test_new_database_is_wal_with_schema_version(journal: Journal) -> None:
    assert journal._query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    meta = journal._query("SELECT value FROM meta WHERE key = 'schema_version'")
    assert meta == [{"value": str(SCHEMA_VERSION)}]
    assert journal.counts() == {"series": {}, "jobs": {}, "deliveries": {}, "instances": {"total": 0}}


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
        assert job is not None and job["models"] == ["demo"] and job["not_before"] is None
        j.retry_job(job["id"], error="busy", not_before=50.0)
        assert j.claim_job(now=20.0) is None
        assert j.next_job_time() == 50.0
    finally:
        j.close()
    Journal(path).close()  # opening again migrates nothing and fails nothing


# ------------------------------------------------------------------ instances and series


def test_first_instance_creates_a_receiving_series(journal: Journal) -> None:
    out = journal.record_instance(rec("1.1", at=100.0, expected=3))
    assert out == RecordOutcome(replaced=False, old_path=None, late=False)
    s = journal.get_series(SA)
    assert pick(s, "state", "generation", "instance_count", "expected_count") == ("receiving", 1, 1, 3)
    assert pick(s, "first_received", "last_received", "rules") == (100.0, 100.0, None)
    assert pick(s, "study_uid", "modality", "series_description") == (STUDY, "CT", "Abdomen")
    assert pick(s, "called_ae", "calling_ae", "last_association_id") == ("NNUNET", "STORESCU", "assoc-1")
    assert journal.has_instance("1.1") and not journal.has_instance("1.2")
    assert journal.known_paths() == {f"spool/{STUDY}/{SA}/1.1.dcm"}
    assert journal.get_series(SB) is None


def test_more_instances_bump_generation_and_keep_the_latest_time(journal: Journal) -> None:
    journal.record_instance(rec("1.1", at=100.0, expected=3))
    journal.record_instance(rec("1.2", at=105.0, assoc="assoc-2"))  # no count given: keeps 3
    journal.record_instance(rec("1.3", at=101.0))  # out of order: last_received stays 105
    s = journal.get_series(SA)
    assert s is not None
    assert (s["generation"], s["instance_count"], s["expected_count"]) == (3, 3, 3)
    assert (s["first_received"], s["last_received"]) == (100.0, 105.0)
    assert s["last_association_id"] == "assoc-1"
    journal.record_instance(rec("1.4", at=106.0, expected=5))
    s = journal.get_series(SA)
    assert s is not None and s["expected_count"] == 5
    rows = journal.instances_of_series(SA)
    assert [r["sop_instance_uid"] for r in rows] == ["1.1", "1.3", "1.2", "1.4"]  # by received_at


def test_same_sop_instance_replaces_without_counting_twice(journal: Journal) -> None:
    journal.record_instance(rec("1.1", at=100.0))
    journal.record_instance(rec("1.2", at=100.0))
    same = journal.record_instance(rec("1.1", at=110.0, size=99))
    assert same == RecordOutcome(replaced=True, old_path=None, late=False)
    [row] = [r for r in journal.instances_of_series(SA) if r["sop_instance_uid"] == "1.1"]
    assert (row["size"], row["received_at"]) == (99, 110.0)
    moved_file = journal.record_instance(rec("1.1", at=111.0, path="spool/elsewhere/1.1.dcm"))
    assert moved_file == RecordOutcome(replaced=True, old_path=f"spool/{STUDY}/{SA}/1.1.dcm", late=False)
    s = journal.get_series(SA)
    assert s is not None and (s["instance_count"], s["generation"]) == (2, 4)
    [row] = [r for r in journal.instances_of_series(SA) if r["sop_instance_uid"] == "1.1"]
    assert (row["path"], row["received_at"]) == ("spool/elsewhere/1.1.dcm", 111.0)
    assert journal.counts()["instances"] == {"total": 2}


def test_instance_moving_to_another_series_is_counted_in_both(journal: Journal) -> None:
    for sop in ("1.1", "1.2", "1.3"):
        journal.record_instance(rec(sop, SA))
    journal.record_instance(rec("2.1", SB))
    out = journal.record_instance(rec("1.3", SB, at=120.0))  # to an existing series
    assert out.replaced and out.old_path == f"spool/{STUDY}/{SA}/1.3.dcm"
    journal.record_instance(rec("1.2", SC, at=121.0))  # to a series not seen before
    assert kept_counts(journal) == true_counts(journal) == {SA: 1, SB: 2, SC: 1}
    assert [r["sop_instance_uid"] for r in journal.instances_of_series(SA)] == ["1.1"]
    journal.record_instance(rec("1.1", SB, at=122.0))  # the last one leaves: SA holds none
    a = journal.get_series(SA)
    assert a is not None and a["instance_count"] == 0
    assert true_counts(journal) == {SB: 3, SC: 1}


def test_instance_count_equals_count_star_after_mixed_traffic(journal: Journal) -> None:
    """New, replaced and moved instances in a fixed pseudo-random order."""
    series = [SA, SB, SC]
    state = 12345
    for step in range(300):
        state = (state * 1103515245 + 12345) % 2**31
        sop = f"1.{state % 40 + 1}"  # 40 SOP instances, so many replace or move
        target = series[(state >> 8) % 3]
        journal.record_instance(rec(sop, target, at=100.0 + step))
    assert kept_counts(journal) == true_counts(journal)
    assert sum(true_counts(journal).values()) == journal.counts()["instances"]["total"] == 40


def test_routing_decisions(journal: Journal) -> None:
    journal.record_instance(rec("1.1", SA, at=100.0))
    journal.record_instance(rec("2.1", SB, at=101.0))
    journal.record_instance(rec("3.1", SC, at=99.0))
    assert [s["series_uid"] for s in journal.unrouted_series()] == [SC, SA, SB]  # by first_received
    assert [s["series_uid"] for s in journal.list_series()] == [SB, SA, SC]  # newest first
    assert [s["series_uid"] for s in journal.list_series(limit=1)] == [SB]

    journal.set_routing(SA, rules=["a", "b"], quiet_seconds=7.5, complete_on_release=True, note="a, b")
    journal.set_routing(SB, rules=[], note="no rule matched")
    a, b = journal.get_series(SA), journal.get_series(SB)
    assert a is not None and b is not None
    assert pick(a, "state", "rules", "quiet_seconds") == ("receiving", ["a", "b"], 7.5)
    assert pick(a, "complete_on_release", "use_expected_count", "routing_note") == (1, 1, "a, b")
    assert (b["state"], b["rules"], b["routing_note"]) == ("unmatched", None, "no rule matched")
    assert [s["series_uid"] for s in journal.unrouted_series()] == [SC]
    assert journal.counts()["series"] == {"receiving": 2, "unmatched": 1}

    queued(journal, SC)
    assert journal.clear_routing_of_receiving() == 1  # SA only: SC is queued, SB unmatched
    assert [s["series_uid"] for s in journal.unrouted_series()] == [SA]
    c = journal.get_series(SC)
    assert c is not None and c["rules"] == ["ct-demo"]
    journal.set_routing(SC, rules=[], note="late change")  # only a receiving series becomes unmatched
    c = journal.get_series(SC)
    assert c is not None and c["state"] == "queued"


def test_unmatched_series_receiving_again_is_routed_again(journal: Journal) -> None:
    journal.record_instance(rec("1.1"))
    journal.set_routing(SA, rules=[], note="nothing")
    out = journal.record_instance(rec("1.2", at=130.0))
    assert out.late is False  # no job ever ran
    s = journal.get_series(SA)
    assert s is not None and (s["state"], s["rules"]) == ("receiving", None)
    assert [r["series_uid"] for r in journal.unrouted_series()] == [SA]


def test_late_arrival_after_a_job_reopens_the_series(journal: Journal) -> None:
    journal.record_instance(rec("1.1", assoc="assoc-1"))
    [job_id] = queued(journal)
    journal.mark_association_released("assoc-1")  # series queued: not marked
    s = journal.get_series(SA)
    assert s is not None and (s["state"], s["released"], s["generation"]) == ("queued", 0, 1)
    out = journal.record_instance(rec("1.2", at=300.0, assoc="assoc-2"))
    assert out == RecordOutcome(replaced=False, old_path=None, late=True)
    s = journal.get_series(SA)
    assert pick(s, "state", "generation", "rules", "last_received") == ("receiving", 2, ["ct-demo"], 300.0)
    job = journal.get_job(job_id)
    assert job is not None and (job["state"], job["generation"]) == ("pending", 1)


def test_association_release_marks_only_the_series_it_delivered_last(journal: Journal) -> None:
    journal.record_instance(rec("1.1", SA, assoc="assoc-1"))
    journal.record_instance(rec("2.1", SB, assoc="assoc-1"))
    journal.record_instance(rec("2.2", SB, assoc="assoc-2"))
    assert journal.mark_association_released("assoc-1") == 1
    assert journal.mark_association_released("unknown") == 0
    a, b = journal.get_series(SA), journal.get_series(SB)
    assert a is not None and b is not None and (a["released"], b["released"]) == (1, 0)
    journal.record_instance(rec("1.2", SA, assoc="assoc-1"))  # a new instance clears the flag
    a = journal.get_series(SA)
    assert a is not None and a["released"] == 0


# ------------------------------------------------------------------ completion triggers


def test_quiet_period_with_a_driven_clock(journal: Journal) -> None:
    journal.record_instance(rec("1.1", at=100.0))
    assert journal.due_series(now=10_000.0) == []  # not routed: never due
    assert journal.next_due_time() is None
    journal.set_routing(SA, rules=["r"], quiet_seconds=10.0)
    journal.record_instance(rec("1.2", at=104.0))
    assert journal.next_due_time() == 114.0
    assert journal.due_series(now=113.99) == []
    [due] = journal.due_series(now=114.0)
    assert pick(due, "series_uid", "trigger", "rules", "generation") == (SA, "quiet_period", ["r"], 2)


def test_expected_count_completes_before_the_quiet_period(journal: Journal) -> None:
    journal.record_instance(rec("1.1", at=100.0, expected=2))
    journal.set_routing(SA, rules=["r"], quiet_seconds=60.0)
    assert journal.due_series(now=101.0) == []
    journal.record_instance(rec("1.2", at=101.0))
    [due] = journal.due_series(now=101.0)
    assert due["trigger"] == "expected_count"
    journal.set_routing(SA, rules=["r"], quiet_seconds=60.0, use_expected_count=False)
    assert journal.due_series(now=101.0) == []
    assert journal.due_series(now=161.0)[0]["trigger"] == "quiet_period"


def test_association_release_completes_when_the_rule_asks(journal: Journal) -> None:
    journal.record_instance(rec("1.1", SA, at=100.0, assoc="x"))
    journal.record_instance(rec("2.1", SB, at=100.0, assoc="x"))
    journal.set_routing(SA, rules=["r"], quiet_seconds=60.0, complete_on_release=True)
    journal.set_routing(SB, rules=["r"], quiet_seconds=60.0, complete_on_release=False)
    assert journal.due_series(now=101.0) == []
    assert journal.mark_association_released("x") == 2
    due = journal.due_series(now=101.0)
    assert [(d["series_uid"], d["trigger"]) for d in due] == [(SA, "association_released")]


def test_expected_count_wins_over_release_and_quiet(journal: Journal) -> None:
    journal.record_instance(rec("1.1", at=100.0, expected=1, assoc="x"))
    journal.set_routing(SA, rules=["r"], quiet_seconds=0.0, complete_on_release=True)
    journal.mark_association_released("x")
    assert journal.due_series(now=500.0)[0]["trigger"] == "expected_count"


# ------------------------------------------------------------------ jobs


def test_create_jobs_queues_one_per_rule_and_refuses_a_stale_generation(journal: Journal) -> None:
    journal.record_instance(rec("1.1"))
    journal.record_instance(rec("1.2"))
    journal.set_routing(SA, rules=["a", "b"])
    stale = journal.create_jobs(SA, generation=1, jobs=[SPEC], trigger="quiet_period", now=200.0)
    assert stale == [] and journal.list_jobs() == []
    assert journal.create_jobs(SB, generation=1, jobs=[SPEC], trigger="manual", now=200.0) == []
    other = JobSpec("b", ["m1", "m2"], ["pacs", "archive"], {"b": 1, "a": [2]})
    ids = journal.create_jobs(SA, generation=2, jobs=[SPEC, other], trigger="expected_count", now=200.0)
    assert len(ids) == 2 and ids[0] < ids[1]
    s = journal.get_series(SA)
    assert s is not None and s["state"] == "queued"
    job = journal.get_job(ids[1])
    assert pick(job, "state", "generation", "rule_name", "trigger") == ("pending", 2, "b", "expected_count")
    assert pick(job, "models", "destinations") == (["m1", "m2"], ["pacs", "archive"])
    assert pick(job, "args", "attempts", "created_at", "started_at") == ({"a": [2], "b": 1}, 0, 200.0, None)
    # queued: a second completion of the same generation queues nothing
    assert journal.create_jobs(SA, generation=2, jobs=[SPEC], trigger="quiet_period", now=201.0) == []
    assert journal.get_job(999) is None


def test_new_generation_supersedes_pending_jobs_but_not_running_ones(journal: Journal) -> None:
    journal.record_instance(rec("1.1"))
    first, second = queued(journal, n=2)
    running = journal.claim_job(now=201.0)
    assert running is not None and running["id"] == first
    journal.record_instance(rec("1.2", at=250.0))
    [third] = journal.create_jobs(SA, generation=2, jobs=[SPEC], trigger="quiet_period", now=260.0)
    states = {j["id"]: (j["state"], j["finished_at"]) for j in journal.list_jobs()}
    assert states == {first: ("running", None), second: ("superseded", 260.0), third: ("pending", None)}
    assert [j["id"] for j in journal.list_jobs(state="superseded")] == [second]
    assert [j["id"] for j in journal.list_jobs(limit=1)] == [third]


def test_claim_takes_the_oldest_due_job_once(journal: Journal) -> None:
    journal.record_instance(rec("1.1", SA))
    journal.record_instance(rec("2.1", SB))
    [a] = queued(journal, SA)
    [b] = queued(journal, SB)
    job = journal.claim_job(now=300.0)
    assert job is not None
    assert (job["id"], job["state"], job["attempts"], job["started_at"]) == (a, "running", 1, 300.0)
    assert job["models"] == ["demo"] and job["args"] == {"tta": False}  # decoded
    assert pick(journal.get_job(a), "state", "attempts", "started_at") == ("running", 1, 300.0)
    second = journal.claim_job(now=300.0)
    assert second is not None and second["id"] == b
    assert journal.claim_job(now=300.0) is None
    assert journal.next_job_time() is None


def test_retry_with_not_before_is_skipped_until_due(journal: Journal) -> None:
    journal.record_instance(rec("1.1", SA))
    journal.record_instance(rec("2.1", SB))
    [a] = queued(journal, SA)
    [b] = queued(journal, SB)
    job = journal.claim_job(now=300.0)
    assert job is not None and job["id"] == a
    journal.retry_job(a, error="not enough GPU memory", not_before=400.0)
    stored = journal.get_job(a)
    assert pick(stored, "state", "error", "not_before") == ("pending", "not enough GPU memory", 400.0)
    assert journal.next_job_time() == 0.0  # b is due at once
    later = journal.claim_job(now=300.0)  # skips a, not due yet
    assert later is not None and later["id"] == b
    assert journal.next_job_time() == 400.0
    assert journal.claim_job(now=399.9) is None
    again = journal.claim_job(now=400.0)
    assert again is not None and (again["id"], again["attempts"]) == (a, 2)
    journal.retry_job(a, error="again")  # no not_before: claimable at once
    assert journal.claim_job(now=0.0) is not None


def test_retry_of_a_job_that_is_not_running_changes_nothing(journal: Journal) -> None:
    journal.record_instance(rec("1.1"))
    [a] = queued(journal)
    journal.retry_job(a, error="x", not_before=900.0)  # pending, never claimed
    job = journal.get_job(a)
    assert job is not None and (job["error"], job["not_before"]) == (None, None)


@pytest.mark.parametrize("state", ["done", "empty"])
def test_finish_job_queues_its_deliveries(journal: Journal, state: str) -> None:
    journal.record_instance(rec("1.1"))
    queued(journal)
    job = journal.claim_job(now=300.0)
    assert job is not None
    outputs = [{"path": "outputs/seg.dcm", "sop_instance_uid": "2.25.1", "sop_class_uid": SEG}]
    assert journal.finish_job(
        job["id"],
        state=state,
        now=320.0,
        outputs=outputs,
        timings={"inference": 2.5},
        deliveries=[delivery("2.25.1", "pacs"), delivery("2.25.1", "archive")],
    )
    stored = journal.get_job(job["id"])
    assert pick(stored, "state", "finished_at", "timings") == (state, 320.0, {"inference": 2.5})
    assert pick(stored, "outputs") == (outputs,)
    rows = sorted(journal.list_deliveries(), key=lambda d: d["destination"])
    assert [(d["destination"], d["state"], d["job_id"], d["series_uid"]) for d in rows] == [
        ("archive", "pending", job["id"], SA),
        ("pacs", "pending", job["id"], SA),
    ]
    assert all(d["next_attempt_at"] == 320.0 and d["attempts"] == 0 for d in rows)
    assert journal.next_delivery_time() == 320.0


def test_finish_job_supersedes_a_stale_generation(journal: Journal) -> None:
    journal.record_instance(rec("1.1"))
    queued(journal)
    job = journal.claim_job(now=300.0)
    assert job is not None
    journal.record_instance(rec("1.2", at=310.0))  # arrives while the job runs
    assert journal.finish_job(job["id"], state="done", now=320.0, deliveries=[delivery()]) is False
    stored = journal.get_job(job["id"])
    assert stored is not None and (stored["state"], stored["finished_at"]) == ("superseded", 320.0)
    assert journal.list_deliveries() == []


def test_failed_job_of_a_stale_generation_stays_failed(journal: Journal) -> None:
    journal.record_instance(rec("1.1"))
    queued(journal)
    job = journal.claim_job(now=300.0)
    assert job is not None
    journal.record_instance(rec("1.2", at=310.0))
    assert journal.finish_job(job["id"], state="failed", now=320.0, error="SeriesError: gap") is True
    stored = journal.get_job(job["id"])
    assert stored is not None and (stored["state"], stored["error"]) == ("failed", "SeriesError: gap")
    with pytest.raises(KeyError):
        journal.finish_job(12345, state="done", now=1.0)


def test_newer_result_supersedes_pending_deliveries_of_the_same_instance(journal: Journal) -> None:
    journal.record_instance(rec("1.1"))
    queued(journal)
    first = journal.claim_job(now=300.0)
    assert first is not None
    first_results = [delivery("2.25.1", "pacs"), delivery("2.25.1", "archive"), delivery("2.25.2", "pacs")]
    journal.finish_job(first["id"], state="done", now=301.0, deliveries=first_results)
    [sending] = journal.claim_deliveries(now=301.0, destination="archive")
    journal.record_instance(rec("1.2", at=310.0))  # late arrival: a new job re-delivers 2.25.1
    s = journal.get_series(SA)
    assert s is not None
    journal.create_jobs(SA, generation=s["generation"], jobs=[SPEC], trigger="quiet_period", now=320.0)
    second = journal.claim_job(now=321.0)
    assert second is not None
    again = [delivery("2.25.1", "pacs"), delivery("2.25.1", "archive")]
    journal.finish_job(second["id"], state="done", now=330.0, deliveries=again)
    got = {
        pick(d, "job_id", "sop_instance_uid", "destination"): d["state"] for d in journal.list_deliveries()
    }
    assert got == {
        (first["id"], "2.25.1", "pacs"): "superseded",
        (first["id"], "2.25.1", "archive"): "sending",  # in flight: left alone
        (first["id"], "2.25.2", "pacs"): "pending",  # another instance
        (second["id"], "2.25.1", "pacs"): "pending",
        (second["id"], "2.25.1", "archive"): "pending",
    }
    assert sending["state"] == "sending"


# ------------------------------------------------------------------ deliveries


def finished_job_with(journal: Journal, deliveries: list[dict[str, str]], now: float = 300.0) -> int:
    journal.record_instance(rec("1.1"))
    queued(journal)
    job = journal.claim_job(now=now)
    assert job is not None
    journal.finish_job(job["id"], state="done", now=now, deliveries=deliveries)
    return int(job["id"])


def test_claim_deliveries_by_due_time_destination_and_limit(journal: Journal) -> None:
    results = [delivery("2.25.1", "pacs"), delivery("2.25.2", "archive"), delivery("2.25.3", "pacs")]
    finished_job_with(journal, results)
    assert journal.claim_deliveries(now=299.0) == []  # not due before the job finished
    [one] = journal.claim_deliveries(now=300.0, destination="pacs", limit=1)
    assert (one["sop_instance_uid"], one["state"], one["attempts"]) == ("2.25.1", "sending", 1)
    rest = journal.claim_deliveries(now=300.0)
    assert [d["sop_instance_uid"] for d in rest] == ["2.25.2", "2.25.3"]
    assert journal.claim_deliveries(now=300.0) == []
    assert journal.counts()["deliveries"] == {"sending": 3}
    assert journal.next_delivery_time() is None


def test_delivery_outcomes_done_retry_and_failed(journal: Journal) -> None:
    finished_job_with(journal, [delivery("2.25.1"), delivery("2.25.2"), delivery("2.25.3")])
    a, b, c = journal.claim_deliveries(now=300.0)
    journal.finish_delivery(a["id"], ok=True, now=301.0, status=0)
    journal.finish_delivery(b["id"], ok=False, now=301.0, status=0xA700, error="full", retry_at=360.0)
    journal.finish_delivery(c["id"], ok=False, now=301.0, status=0xC000, error="cannot understand")
    rows = {d["id"]: d for d in journal.list_deliveries()}
    assert pick(rows[a["id"]], "state", "done_at", "last_status") == ("done", 301.0, 0)
    retry = rows[b["id"]]
    assert (retry["state"], retry["next_attempt_at"], retry["done_at"]) == ("pending", 360.0, None)
    assert (retry["last_status"], retry["last_error"], retry["attempts"]) == (0xA700, "full", 1)
    failed = rows[c["id"]]
    assert pick(failed, "state", "done_at", "last_error") == ("failed", 301.0, "cannot understand")
    assert journal.next_delivery_time() == 360.0
    assert journal.claim_deliveries(now=359.0) == []
    [again] = journal.claim_deliveries(now=360.0)
    assert (again["id"], again["attempts"]) == (b["id"], 2)
    assert [d["id"] for d in journal.list_deliveries(state="done")] == [a["id"]]
    assert len(journal.list_deliveries(limit=2)) == 2


# ------------------------------------------------------------------ recovery, counts, events


def test_recover_requeues_running_jobs_and_sending_deliveries(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    finished_job_with(journal, [delivery("2.25.1"), delivery("2.25.2")])
    journal.claim_deliveries(now=300.0, limit=1)
    journal.record_instance(rec("2.1", SB))
    queued(journal, SB)
    running = journal.claim_job(now=310.0)
    assert running is not None
    assert journal.counts()["jobs"] == {"done": 1, "running": 1}
    with caplog.at_level(logging.INFO, logger="dicom_node.journal"):
        assert journal.recover() == {"jobs": 1, "deliveries": 1}
    assert "recovered 1 running job(s) and 1 delivery(ies)" in caplog.text
    counts = journal.counts()
    assert counts["jobs"] == {"done": 1, "pending": 1}
    assert counts["deliveries"] == {"pending": 2}
    assert counts["series"] == {"queued": 2} and counts["instances"] == {"total": 2}
    again = journal.claim_job(now=311.0)
    assert again is not None and (again["id"], again["attempts"]) == (running["id"], 2)
    journal.recover()
    assert journal.recover() == {"jobs": 0, "deliveries": 0}


def test_events_newest_first_with_level_filter(journal: Journal) -> None:
    journal.log_event("info", "series_unmatched", "no rule", series_uid=SA, now=1.0)
    journal.log_event("error", "job_failed", "job 3 failed", job_id=3, now=2.0)
    journal.log_event("warning", "delivery_failed", "pacs down")
    events = journal.recent_events()
    assert [e["kind"] for e in events] == ["delivery_failed", "job_failed", "series_unmatched"]
    assert events[0]["at"] > 1_600_000_000  # defaults to the wall clock
    assert (events[1]["job_id"], events[1]["series_uid"], events[2]["series_uid"]) == (3, None, SA)
    assert [e["message"] for e in journal.recent_events(level="error")] == ["job 3 failed"]
    assert [e["kind"] for e in journal.recent_events(limit=1)] == ["delivery_failed"]


# ------------------------------------------------------------------ readers and writers


def test_readonly_journal_sees_commits_and_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    writer = Journal(path)
    reader = Journal(path, readonly=True)
    try:
        assert reader.counts()["instances"] == {"total": 0}
        writer.record_instance(rec("1.1"))
        writer.log_event("error", "store_rejected", "bad UID")
        assert reader.counts()["instances"] == {"total": 1}  # committed after the reader opened
        assert reader.recent_events()[0]["kind"] == "store_rejected"
        writer.record_instance(rec("1.2"))
        s = reader.get_series(SA)
        assert s is not None and s["instance_count"] == 2
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.log_event("info", "x", "y")
        assert writer.recent_events(limit=5)[0]["kind"] == "store_rejected"
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
        writer.record_instance(rec("1.1"))
        reader = Journal(path, readonly=True)
        try:
            assert reader.counts()["instances"] == {"total": 1}
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
                j.record_instance(rec(f"9.{t}.{i}", [SA, SB, SC][(t + i) % 3], at=float(i)))
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
        assert shared.counts()["instances"] == {"total": total}
        assert kept_counts(shared) == true_counts(shared)
        assert sum(kept_counts(shared).values()) == total
        generations = {s["series_uid"]: s["generation"] for s in shared.list_series()}
        assert generations == kept_counts(shared)  # every record bumped its series exactly once
    finally:
        for j in [shared, *own]:
            j.close()
