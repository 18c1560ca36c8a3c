"""Instances and series: record_instance's replace / move / late-arrival semantics and its incremental
instance count, routing decisions, and the completion triggers with a driven clock."""

from __future__ import annotations

from dicom_node.storage.journal import Journal, RecordOutcome
from tests.support.journal_rows import (
    SA,
    SB,
    SC,
    STUDY,
    instance_record,
    kept_counts,
    pick,
    queued,
    true_counts,
)


def test_first_instance_creates_a_receiving_series(journal: Journal) -> None:
    out = journal.record_instance(instance_record("1.1", at=100.0, expected=3))
    assert out == RecordOutcome(replaced=False, old_path=None, late=False)
    s = journal.get_series(SA)
    assert pick(s, "state", "generation", "instance_count", "expected_count") == ("receiving", 1, 1, 3)
    assert pick(s, "first_received", "last_received", "rules") == (100.0, 100.0, None)
    assert pick(s, "study_uid", "modality", "series_description") == (STUDY, "CT", "Abdomen")
    assert pick(s, "called_ae", "calling_ae", "last_association_id") == ("NNUNET", "STORESCU", "assoc-1")
    assert journal.known_paths() == {f"spool/{STUDY}/{SA}/1.1.dcm"}
    assert journal.get_series(SB) is None


def test_more_instances_bump_generation_and_keep_the_latest_time(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", at=100.0, expected=3))
    journal.record_instance(instance_record("1.2", at=105.0, assoc="assoc-2"))  # no count given: keeps 3
    journal.record_instance(instance_record("1.3", at=101.0))  # out of order: last_received stays 105
    s = journal.get_series(SA)
    assert s is not None
    assert (s.generation, s.instance_count, s.expected_count) == (3, 3, 3)
    assert (s.first_received, s.last_received) == (100.0, 105.0)
    assert s.last_association_id == "assoc-1"
    journal.record_instance(instance_record("1.4", at=106.0, expected=5))
    s = journal.get_series(SA)
    assert s is not None and s.expected_count == 5
    rows = journal.instances_of_series(SA)
    assert [r.sop_instance_uid for r in rows] == ["1.1", "1.3", "1.2", "1.4"]  # by received_at


def test_same_sop_instance_replaces_without_counting_twice(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", at=100.0))
    journal.record_instance(instance_record("1.2", at=100.0))
    same = journal.record_instance(instance_record("1.1", at=110.0, size=99))
    assert same == RecordOutcome(replaced=True, old_path=None, late=False)
    [row] = [r for r in journal.instances_of_series(SA) if r.sop_instance_uid == "1.1"]
    assert (row.size, row.received_at) == (99, 110.0)
    moved_file = journal.record_instance(instance_record("1.1", at=111.0, path="spool/elsewhere/1.1.dcm"))
    assert moved_file == RecordOutcome(replaced=True, old_path=f"spool/{STUDY}/{SA}/1.1.dcm", late=False)
    s = journal.get_series(SA)
    assert s is not None and (s.instance_count, s.generation) == (2, 4)
    [row] = [r for r in journal.instances_of_series(SA) if r.sop_instance_uid == "1.1"]
    assert (row.path, row.received_at) == ("spool/elsewhere/1.1.dcm", 111.0)
    assert journal.counts().instances == 2


def test_instance_moving_to_another_series_is_counted_in_both(journal: Journal) -> None:
    for sop in ("1.1", "1.2", "1.3"):
        journal.record_instance(instance_record(sop, SA))
    journal.record_instance(instance_record("2.1", SB))
    out = journal.record_instance(instance_record("1.3", SB, at=120.0))  # to an existing series
    assert out.replaced and out.old_path == f"spool/{STUDY}/{SA}/1.3.dcm"
    journal.record_instance(instance_record("1.2", SC, at=121.0))  # to a series not seen before
    assert kept_counts(journal) == true_counts(journal) == {SA: 1, SB: 2, SC: 1}
    assert [r.sop_instance_uid for r in journal.instances_of_series(SA)] == ["1.1"]
    journal.record_instance(instance_record("1.1", SB, at=122.0))  # the last one leaves: SA holds none
    a = journal.get_series(SA)
    assert a is not None and a.instance_count == 0
    assert true_counts(journal) == {SB: 3, SC: 1}


def test_instance_count_equals_count_star_after_mixed_traffic(journal: Journal) -> None:
    """New, replaced and moved instances in a fixed pseudo-random order."""
    series = [SA, SB, SC]
    state = 12345
    for step in range(300):
        state = (state * 1103515245 + 12345) % 2**31
        sop = f"1.{state % 40 + 1}"  # 40 SOP instances, so many replace or move
        target = series[(state >> 8) % 3]
        journal.record_instance(instance_record(sop, target, at=100.0 + step))
    assert kept_counts(journal) == true_counts(journal)
    assert sum(true_counts(journal).values()) == journal.counts().instances == 40


def test_routing_decisions(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA, at=100.0))
    journal.record_instance(instance_record("2.1", SB, at=101.0))
    journal.record_instance(instance_record("3.1", SC, at=99.0))
    assert [s.series_uid for s in journal.unrouted_series()] == [SC, SA, SB]  # by first_received
    assert [s.series_uid for s in journal.list_series()] == [SB, SA, SC]  # newest first
    assert [s.series_uid for s in journal.list_series(limit=1)] == [SB]

    journal.set_routing(SA, rules=["a", "b"], quiet_seconds=7.5, complete_on_release=True, note="a, b")
    journal.set_routing(SB, rules=[], note="no rule matched")
    a, b = journal.get_series(SA), journal.get_series(SB)
    assert a is not None and b is not None
    assert pick(a, "state", "rules", "quiet_seconds") == ("receiving", ("a", "b"), 7.5)
    assert pick(a, "complete_on_release", "use_expected_count", "routing_note") == (1, 1, "a, b")
    assert (b.state, b.rules, b.routing_note) == ("unmatched", None, "no rule matched")
    assert [s.series_uid for s in journal.unrouted_series()] == [SC]
    assert journal.counts().series == {"receiving": 2, "unmatched": 1}

    queued(journal, SC)
    assert journal.clear_routing_of_receiving() == 1  # SA only: SC is queued, SB unmatched
    assert [s.series_uid for s in journal.unrouted_series()] == [SA]
    c = journal.get_series(SC)
    assert c is not None and c.rules == ("ct-demo",)
    journal.set_routing(SC, rules=[], note="late change")  # only a receiving series becomes unmatched
    c = journal.get_series(SC)
    assert c is not None and c.state == "queued"


def test_unmatched_series_receiving_again_is_routed_again(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1"))
    journal.set_routing(SA, rules=[], note="nothing")
    out = journal.record_instance(instance_record("1.2", at=130.0))
    assert out.late is False  # no job ever ran
    s = journal.get_series(SA)
    assert s is not None and (s.state, s.rules) == ("receiving", None)
    assert [r.series_uid for r in journal.unrouted_series()] == [SA]


def test_late_arrival_after_a_job_reopens_the_series(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", assoc="assoc-1"))
    [job_id] = queued(journal)
    journal.mark_association_released("assoc-1")  # series queued: not marked
    s = journal.get_series(SA)
    assert s is not None and (s.state, s.released, s.generation) == ("queued", 0, 1)
    out = journal.record_instance(instance_record("1.2", at=300.0, assoc="assoc-2"))
    assert out == RecordOutcome(replaced=False, old_path=None, late=True)
    s = journal.get_series(SA)
    assert pick(s, "state", "generation", "rules", "last_received") == ("receiving", 2, ("ct-demo",), 300.0)
    job = journal.get_job(job_id)
    assert job is not None and (job.state, job.generation) == ("pending", 1)


def test_association_release_marks_only_the_series_it_delivered_last(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA, assoc="assoc-1"))
    journal.record_instance(instance_record("2.1", SB, assoc="assoc-1"))
    journal.record_instance(instance_record("2.2", SB, assoc="assoc-2"))
    assert journal.mark_association_released("assoc-1") == 1
    assert journal.mark_association_released("unknown") == 0
    a, b = journal.get_series(SA), journal.get_series(SB)
    assert a is not None and b is not None and (a.released, b.released) == (1, 0)
    journal.record_instance(instance_record("1.2", SA, assoc="assoc-1"))  # a new instance clears the flag
    a = journal.get_series(SA)
    assert a is not None and a.released == 0


def test_quiet_period_with_a_driven_clock(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", at=100.0))
    assert journal.due_series(now=10_000.0) == []  # not routed: never due
    assert journal.next_due_time() is None
    journal.set_routing(SA, rules=["r"], quiet_seconds=10.0)
    journal.record_instance(instance_record("1.2", at=104.0))
    assert journal.next_due_time() == 114.0
    assert journal.due_series(now=113.99) == []
    [due] = journal.due_series(now=114.0)
    assert due.trigger == "quiet_period"
    assert pick(due.series, "series_uid", "rules", "generation") == (SA, ("r",), 2)


def test_expected_count_completes_before_the_quiet_period(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", at=100.0, expected=2))
    journal.set_routing(SA, rules=["r"], quiet_seconds=60.0)
    assert journal.due_series(now=101.0) == []
    journal.record_instance(instance_record("1.2", at=101.0))
    [due] = journal.due_series(now=101.0)
    assert due.trigger == "expected_count"
    journal.set_routing(SA, rules=["r"], quiet_seconds=60.0, use_expected_count=False)
    assert journal.due_series(now=101.0) == []
    assert journal.due_series(now=161.0)[0].trigger == "quiet_period"


def test_association_release_completes_when_the_rule_asks(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA, at=100.0, assoc="x"))
    journal.record_instance(instance_record("2.1", SB, at=100.0, assoc="x"))
    journal.set_routing(SA, rules=["r"], quiet_seconds=60.0, complete_on_release=True)
    journal.set_routing(SB, rules=["r"], quiet_seconds=60.0, complete_on_release=False)
    assert journal.due_series(now=101.0) == []
    assert journal.mark_association_released("x") == 2
    due = journal.due_series(now=101.0)
    assert [(d.series.series_uid, d.trigger) for d in due] == [(SA, "association_released")]


def test_expected_count_wins_over_release_and_quiet(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", at=100.0, expected=1, assoc="x"))
    journal.set_routing(SA, rules=["r"], quiet_seconds=0.0, complete_on_release=True)
    journal.mark_association_released("x")
    assert journal.due_series(now=500.0)[0].trigger == "expected_count"


def test_images_in_acquisition_completes_only_when_every_acquisition_seen_is_complete(
    journal: Journal,
) -> None:
    # two acquisitions of 2, each instance announcing 2: the series holds 4
    journal.record_instance(instance_record("1.1", at=100.0, expected=2, acquisition="1"))
    journal.record_instance(instance_record("1.2", at=100.0, expected=2, acquisition="2"))
    journal.set_routing(SA, rules=["r"], quiet_seconds=60.0)
    journal.record_instance(instance_record("1.3", at=101.0, expected=2, acquisition="1"))
    assert journal.due_series(now=101.0) == []  # 2 instances reached, acquisition 2 is not complete
    journal.record_instance(instance_record("1.4", at=102.0, expected=2, acquisition="2"))
    assert journal.due_series(now=102.0)[0].trigger == "expected_count"


def test_after_a_completion_only_the_quiet_period_completes_again(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", at=100.0, expected=1))
    [job] = queued(journal, now=100.0)
    assert job
    journal.record_instance(
        instance_record("1.2", at=110.0, expected=1)
    )  # late, with the count still reached
    assert journal.due_series(now=110.0) == []
    journal.record_instance(instance_record("1.3", at=115.0, expected=1))
    assert journal.due_series(now=124.9) == []
    [due] = journal.due_series(now=125.0)
    assert (due.trigger, due.series.generation) == ("quiet_period", 3)


def test_an_unchanged_resend_keeps_the_generation_and_a_changed_one_bumps_it(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", at=100.0))
    journal.record_instance(instance_record("1.2", at=100.0))
    queued(journal, now=150.0)
    again = journal.record_instance(instance_record("1.1", at=200.0))
    assert (again.replaced, again.unchanged) == (True, True)
    s = journal.get_series(SA)
    assert pick(s, "generation", "state", "instance_count", "last_received") == (2, "receiving", 2, 200.0)
    changed = journal.record_instance(instance_record("1.2", at=201.0, digest="other content"))
    assert (changed.replaced, changed.unchanged) == (True, False)
    assert pick(journal.get_series(SA), "generation", "instance_count") == (3, 2)


def test_a_series_waiting_for_its_study_completes_when_the_whole_study_is_quiet(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA, at=100.0, expected=1))
    journal.set_routing(SA, rules=["r"], quiet_seconds=10.0, complete_study=True)
    journal.record_instance(instance_record("2.1", SB, at=105.0))  # another series of the same study
    journal.record_instance(
        instance_record("9.1", SC, at=300.0, study="1.2.826.0.1.3680043.9.7777.2")
    )  # other study
    assert journal.due_series(now=114.0) == []  # its own count and quiet period say nothing
    assert journal.next_due_time() == 115.0
    [due] = journal.due_series(now=115.0)
    assert (due.series.series_uid, due.trigger) == (SA, "study_quiet")
