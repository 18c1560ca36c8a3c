"""Jobs and deliveries: queueing by generation, claiming, retries, supersession of stale results, and
delivery outcomes. Times are plain numbers passed in; nothing sleeps."""

from __future__ import annotations

import pytest

from dicom_node.storage.journal import JobOutput, JobSpec, Journal
from tests.support.journal_rows import (
    SA,
    SB,
    SEG,
    SPEC,
    STUDY,
    delivery,
    finished_job_with,
    instance_record,
    pick,
    queued,
)


def test_create_jobs_queues_one_per_rule_and_refuses_a_stale_generation(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    journal.record_instance(instance_record("1.2"))
    journal.set_routing(SA, rules=["a", "b"])
    stale = journal.create_jobs(SA, generation=1, jobs=[SPEC], trigger="quiet_period", now=200.0)
    assert stale == [] and journal.list_jobs() == []
    assert journal.create_jobs(SB, generation=1, jobs=[SPEC], trigger="manual", now=200.0) == []
    other = JobSpec("b", ["m1", "m2"], ["pacs", "archive"], {"b": 1, "a": [2]})
    ids = journal.create_jobs(SA, generation=2, jobs=[SPEC, other], trigger="expected_count", now=200.0)
    assert len(ids) == 2 and ids[0] < ids[1]
    s = journal.get_series(SA)
    assert s is not None and s.state == "queued"
    job = journal.get_job(ids[1])
    assert pick(job, "state", "generation", "rule_name", "trigger") == ("pending", 2, "b", "expected_count")
    assert pick(job, "models", "destinations") == (("m1", "m2"), ("pacs", "archive"))
    assert pick(job, "args", "attempts", "created_at", "started_at") == ({"a": [2], "b": 1}, 0, 200.0, None)
    # queued: a second completion of the same generation queues nothing
    assert journal.create_jobs(SA, generation=2, jobs=[SPEC], trigger="quiet_period", now=201.0) == []
    assert journal.get_job(999) is None


def test_new_generation_supersedes_pending_jobs_but_not_running_ones(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    first, second = queued(journal, n=2)
    running = journal.claim_job(now=201.0)
    assert running is not None and running.id == first
    journal.record_instance(instance_record("1.2", at=250.0))
    [third] = journal.create_jobs(SA, generation=2, jobs=[SPEC], trigger="quiet_period", now=260.0)
    states = {j.id: (j.state, j.finished_at) for j in journal.list_jobs()}
    assert states == {first: ("running", None), second: ("superseded", 260.0), third: ("pending", None)}
    assert [j.id for j in journal.list_jobs(state="superseded")] == [second]
    assert [j.id for j in journal.list_jobs(limit=1)] == [third]


def test_claim_takes_the_oldest_due_job_once(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA))
    journal.record_instance(instance_record("2.1", SB))
    [a] = queued(journal, SA)
    [b] = queued(journal, SB)
    job = journal.claim_job(now=300.0)
    assert job is not None
    assert (job.id, job.state, job.attempts, job.started_at) == (a, "running", 1, 300.0)
    assert job.models == ("demo",) and job.args == {"tta": False}  # decoded
    assert pick(journal.get_job(a), "state", "attempts", "started_at") == ("running", 1, 300.0)
    second = journal.claim_job(now=300.0)
    assert second is not None and second.id == b
    assert journal.claim_job(now=300.0) is None
    assert journal.next_job_time() is None


def test_retry_with_not_before_is_skipped_until_due(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA))
    journal.record_instance(instance_record("2.1", SB))
    [a] = queued(journal, SA)
    [b] = queued(journal, SB)
    job = journal.claim_job(now=300.0)
    assert job is not None and job.id == a
    journal.retry_job(a, error="not enough GPU memory", not_before=400.0)
    stored = journal.get_job(a)
    assert pick(stored, "state", "error", "not_before") == ("pending", "not enough GPU memory", 400.0)
    assert journal.next_job_time() == 0.0  # b is due at once
    later = journal.claim_job(now=300.0)  # skips a, not due yet
    assert later is not None and later.id == b
    assert journal.next_job_time() == 400.0
    assert journal.claim_job(now=399.9) is None
    again = journal.claim_job(now=400.0)
    assert again is not None and (again.id, again.attempts) == (a, 2)
    journal.retry_job(a, error="again")  # no not_before: claimable at once
    assert journal.claim_job(now=0.0) is not None


def test_retry_of_a_job_that_is_not_running_changes_nothing(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    [a] = queued(journal)
    journal.retry_job(a, error="x", not_before=900.0)  # pending, never claimed
    job = journal.get_job(a)
    assert job is not None and (job.error, job.not_before) == (None, None)


@pytest.mark.parametrize("state", ["done", "empty"])
def test_finish_job_queues_its_deliveries(journal: Journal, state: str) -> None:
    journal.record_instance(instance_record("1.1"))
    queued(journal)
    job = journal.claim_job(now=300.0)
    assert job is not None
    outputs = [JobOutput("outputs/seg.dcm", "seg", "2.25.1", SEG)]
    assert journal.finish_job(
        job.id,
        state=state,
        now=320.0,
        outputs=outputs,
        timings={"inference": 2.5},
        deliveries=[delivery("2.25.1", "pacs"), delivery("2.25.1", "archive")],
    )
    stored = journal.get_job(job.id)
    assert pick(stored, "state", "finished_at", "timings") == (state, 320.0, {"inference": 2.5})
    assert pick(stored, "outputs") == (tuple(outputs),)
    rows = sorted(journal.list_deliveries(), key=lambda d: d.destination)
    assert [(d.destination, d.state, d.job_id, d.series_uid) for d in rows] == [
        ("archive", "pending", job.id, SA),
        ("pacs", "pending", job.id, SA),
    ]
    assert all(d.next_attempt_at == 320.0 and d.attempts == 0 for d in rows)
    assert journal.next_delivery_time() == 320.0


def test_finish_job_supersedes_a_stale_generation(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    queued(journal)
    job = journal.claim_job(now=300.0)
    assert job is not None
    journal.record_instance(instance_record("1.2", at=310.0))  # arrives while the job runs
    assert journal.finish_job(job.id, state="done", now=320.0, deliveries=[delivery()]) is False
    stored = journal.get_job(job.id)
    assert stored is not None and (stored.state, stored.finished_at) == ("superseded", 320.0)
    assert journal.list_deliveries() == []


def test_failed_job_of_a_stale_generation_stays_failed(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    queued(journal)
    job = journal.claim_job(now=300.0)
    assert job is not None
    journal.record_instance(instance_record("1.2", at=310.0))
    assert journal.finish_job(job.id, state="failed", now=320.0, error="SeriesError: gap") is True
    stored = journal.get_job(job.id)
    assert stored is not None and (stored.state, stored.error) == ("failed", "SeriesError: gap")
    with pytest.raises(KeyError):
        journal.finish_job(12345, state="done", now=1.0)


def test_newer_result_supersedes_pending_deliveries_of_the_same_instance(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    queued(journal)
    first = journal.claim_job(now=300.0)
    assert first is not None
    first_results = [delivery("2.25.1", "pacs"), delivery("2.25.1", "archive"), delivery("2.25.2", "pacs")]
    journal.finish_job(first.id, state="done", now=301.0, deliveries=first_results)
    [sending] = journal.claim_deliveries(now=301.0, destination="archive")
    journal.record_instance(instance_record("1.2", at=310.0))  # late arrival: a new job re-delivers 2.25.1
    s = journal.get_series(SA)
    assert s is not None
    journal.create_jobs(SA, generation=s.generation, jobs=[SPEC], trigger="quiet_period", now=320.0)
    second = journal.claim_job(now=321.0)
    assert second is not None
    again = [delivery("2.25.1", "pacs"), delivery("2.25.1", "archive")]
    journal.finish_job(second.id, state="done", now=330.0, deliveries=again)
    got = {pick(d, "job_id", "sop_instance_uid", "destination"): d.state for d in journal.list_deliveries()}
    assert got == {
        (first.id, "2.25.1", "pacs"): "superseded",
        (first.id, "2.25.1", "archive"): "sending",  # in flight: left alone
        (first.id, "2.25.2", "pacs"): "pending",  # another instance
        (second.id, "2.25.1", "pacs"): "pending",
        (second.id, "2.25.1", "archive"): "pending",
    }
    assert sending.state == "sending"


def test_claim_deliveries_by_due_time_destination_and_limit(journal: Journal) -> None:
    results = [delivery("2.25.1", "pacs"), delivery("2.25.2", "archive"), delivery("2.25.3", "pacs")]
    finished_job_with(journal, results)
    assert journal.claim_deliveries(now=299.0) == []  # not due before the job finished
    [one] = journal.claim_deliveries(now=300.0, destination="pacs", limit=1)
    assert (one.sop_instance_uid, one.state, one.attempts) == ("2.25.1", "sending", 1)
    rest = journal.claim_deliveries(now=300.0)
    assert [d.sop_instance_uid for d in rest] == ["2.25.2", "2.25.3"]
    assert journal.claim_deliveries(now=300.0) == []
    assert journal.counts().deliveries == {"sending": 3}
    assert journal.next_delivery_time() is None


def test_delivery_outcomes_done_retry_and_failed(journal: Journal) -> None:
    finished_job_with(journal, [delivery("2.25.1"), delivery("2.25.2"), delivery("2.25.3")])
    a, b, c = journal.claim_deliveries(now=300.0)
    journal.finish_delivery(a.id, ok=True, now=301.0, status=0)
    journal.finish_delivery(b.id, ok=False, now=301.0, status=0xA700, error="full", retry_at=360.0)
    journal.finish_delivery(c.id, ok=False, now=301.0, status=0xC000, error="cannot understand")
    rows = {d.id: d for d in journal.list_deliveries()}
    assert pick(rows[a.id], "state", "done_at", "last_status") == ("done", 301.0, 0)
    retry = rows[b.id]
    assert (retry.state, retry.next_attempt_at, retry.done_at) == ("pending", 360.0, None)
    assert (retry.last_status, retry.last_error, retry.attempts) == (0xA700, "full", 1)
    failed = rows[c.id]
    assert pick(failed, "state", "done_at", "last_error") == ("failed", 301.0, "cannot understand")
    assert journal.next_delivery_time() == 360.0
    assert journal.claim_deliveries(now=359.0) == []
    [again] = journal.claim_deliveries(now=360.0)
    assert (again.id, again.attempts) == (b.id, 2)
    assert [d.id for d in journal.list_deliveries(state="done")] == [a.id]
    assert len(journal.list_deliveries(limit=2)) == 2


def _finish_with_seg(journal: Journal, job_id: int, now: float) -> None:
    claimed = journal.claim_job(now=now)
    assert claimed is not None and claimed.id == job_id
    out = JobOutput(path="outputs/2.25.9.dcm", kind="seg", sop_instance_uid="2.25.9", sop_class_uid=SEG)
    assert journal.finish_job(job_id, state="done", now=now, outputs=[out], deliveries=[delivery("2.25.9")])


def test_an_unchanged_resend_redelivers_the_result_without_a_new_job(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    [job_id] = queued(journal, now=200.0)
    _finish_with_seg(journal, job_id, now=210.0)
    journal.record_instance(instance_record("1.1", at=300.0))  # re-sent, byte-identical
    s = journal.get_series(SA)
    assert s is not None
    assert (
        journal.create_jobs(SA, generation=s.generation, jobs=[SPEC], trigger="quiet_period", now=320.0) == []
    )
    assert [j.id for j in journal.list_jobs()] == [job_id]
    again = [d for d in journal.list_deliveries() if d.created_at == 320.0]
    assert [(d.job_id, d.sop_instance_uid, d.path, d.state) for d in again] == [
        (job_id, "2.25.9", "outputs/2.25.9.dcm", "pending")
    ]
    assert pick(journal.get_series(SA), "state") == ("queued",)
    assert journal.recent_events(1)[0].kind == "redelivered"


def test_a_resend_while_the_job_is_pending_queues_nothing_more(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    [job_id] = queued(journal, now=200.0)
    journal.record_instance(instance_record("1.1", at=210.0))
    s = journal.get_series(SA)
    assert s is not None and s.state == "receiving"
    assert (
        journal.create_jobs(SA, generation=s.generation, jobs=[SPEC], trigger="quiet_period", now=220.0) == []
    )
    assert [(j.id, j.state) for j in journal.list_jobs()] == [(job_id, "pending")]
    assert journal.list_deliveries() == []


def test_forwarding_queues_each_instance_once_per_destination_until_it_is_received_again(
    journal: Journal,
) -> None:
    forward = JobSpec("fwd", [], ["pacs", "archive"], {}, forward=True)
    journal.record_instance(instance_record("1.1", at=100.0))
    journal.record_instance(instance_record("1.2", at=101.0))
    journal.set_routing(SA, rules=["fwd"])
    [job_id] = journal.create_jobs(SA, generation=2, jobs=[forward], trigger="quiet_period", now=150.0)
    assert pick(journal.get_job(job_id), "state", "forward", "models") == ("done", True, ())
    sent = {(d.destination, d.sop_instance_uid, d.path) for d in journal.list_deliveries()}
    assert sent == {
        (dest, sop, instance_record(sop).path) for dest in ("pacs", "archive") for sop in ("1.1", "1.2")
    }
    assert journal.forward_received(SA, forward, now=160.0) is None  # nothing new
    journal.record_instance(instance_record("1.2", at=170.0))  # received again
    second = journal.forward_received(SA, forward, now=180.0)
    assert second is not None
    assert sorted(
        (d.destination, d.sop_instance_uid) for d in journal.list_deliveries() if d.job_id == second
    ) == [
        ("archive", "1.2"),
        ("pacs", "1.2"),
    ]


def test_manual_actions_queue_new_work_with_trigger_manual(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    [job_id] = queued(journal, now=200.0)
    with pytest.raises(ValueError, match="it runs already"):
        journal.manual_retry_job(job_id, now=205.0)
    _finish_with_seg(journal, job_id, now=210.0)
    retried = journal.manual_retry_job(job_id, now=220.0)
    assert pick(journal.get_job(retried), "state", "trigger", "generation", "models") == (
        "pending",
        "manual",
        1,
        ("demo",),
    )
    [rerun] = journal.manual_rerun_series(SA, rule="ct-demo", now=230.0)
    assert pick(journal.get_job(rerun), "state", "trigger") == ("pending", "manual")
    with pytest.raises(KeyError, match="no job for rule 'other'"):
        journal.manual_rerun_series(SA, rule="other", now=230.0)
    [first] = journal.list_deliveries()
    again = journal.manual_resend_delivery(first.id, now=240.0)
    resent = next(d for d in journal.list_deliveries() if d.id == again)
    assert pick(resent, "path", "destination", "state") == (first.path, first.destination, "pending")
    with pytest.raises(KeyError, match="no delivery 999"):
        journal.manual_resend_delivery(999, now=250.0)
    assert [e.kind for e in journal.recent_events(3)] == ["manual"] * 3


def test_rerunning_any_input_series_of_a_study_job_copies_the_study_job(journal: Journal) -> None:
    from dicom_node.storage.journal import JobInput

    journal.record_instance(instance_record("1.1", SA, at=100.0))
    journal.record_instance(instance_record("2.1", SB, at=100.0))
    inputs = [JobInput(SA, 1), JobInput(SB, 1)]
    job_id = journal.create_study_job(STUDY, SPEC, inputs=inputs, trigger="study_quiet", now=110.0)
    assert job_id is not None
    journal.record_instance(instance_record("2.2", SB, at=120.0))  # the second input changes
    [copy] = journal.manual_rerun_series(SB, rule=None, now=130.0)
    job = journal.get_job(copy)
    assert job is not None and job.trigger == "manual"
    assert (job.series_uid, job.inputs) == (SA, (JobInput(SA, 1), JobInput(SB, 2)))
