"""Completion: routing of new series, the three completion triggers, late arrivals, restarts, rule
reloads. The clock is driven by the test (no sleeping), except in the thread test."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from dicom_node.config import RuleConfig
from dicom_node.pipeline.completion import CompletionLoop
from dicom_node.pipeline.routing import RuleSet
from dicom_node.storage.journal import DeliverySpec, JobRow, Journal, SeriesRow
from tests.support.clock import T0, Clock
from tests.support.filed_series import FiledSeries
from tests.support.tools import wait_for


class Series(FiledSeries):
    def jobs(self) -> list[JobRow]:
        return sorted((j for j in self.journal.list_jobs() if j.series_uid == self.uid), key=lambda j: j.id)

    def row(self) -> SeriesRow:
        row = self.journal.get_series(self.uid)
        assert row is not None
        return row


def rule(name: str = "ct", **kw: Any) -> RuleConfig:
    data: dict[str, Any] = {
        "name": name,
        "match": {"modality": "CT", "series_description": "(?i).*phantom.*"},
        "models": ["demo"],
        "destinations": ["pacs"],
        "series_quiet_seconds": 5,
    }
    data.update(kw)
    return RuleConfig.model_validate(data)


def make_loop(
    journal: Journal, storage: Path, rules: list[RuleConfig], clock: Clock, **kw: Any
) -> CompletionLoop:
    ruleset = RuleSet.build(rules)
    return CompletionLoop(journal, storage_dir=storage, rules=lambda: ruleset, clock=clock, **kw)


def test_quiet_period_fires_after_the_last_instance(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    woken: list[int] = []
    loop = make_loop(
        journal, tmp_path, [rule(series_quiet_seconds=5)], clock, on_jobs=lambda: woken.append(1)
    )
    s = Series(tmp_path, journal)
    for k in range(3):
        s.add(T0 + k)
    clock.now = T0 + 2
    assert loop.run_once() == pytest.approx(T0 + 2 + 5)  # routed; the next deadline
    assert s.row().rules == ("ct",) and s.row().state == "receiving"
    clock.now = T0 + 6.9
    loop.run_once()
    assert s.jobs() == [] and woken == []
    clock.now = T0 + 7.0
    assert loop.run_once() is None
    [job] = s.jobs()
    assert (job.trigger, job.state, job.rule_name) == ("quiet_period", "pending", "ct")
    assert job.models == ("demo",) and job.destinations == ("pacs",)
    assert job.generation == 3
    assert s.row().state == "queued"
    assert woken == [1]
    loop.run_once()  # nothing more to do: still one job
    assert len(s.jobs()) == 1


def test_association_release_completes_when_the_rule_says_so(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    loop = make_loop(
        journal,
        tmp_path,
        [rule(series_quiet_seconds=600, complete_on_release=True)],
        clock,
    )
    s = Series(tmp_path, journal)
    s.add(T0, association="a1")
    s.add(T0, association="a1")
    loop.run_once()
    assert s.jobs() == []
    assert journal.mark_association_released("a1") == 1
    clock.now = T0 + 1
    loop.run_once()
    [job] = s.jobs()
    assert job.trigger == "association_released"


def test_release_is_ignored_without_the_rule_option(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    loop = make_loop(journal, tmp_path, [rule(series_quiet_seconds=600)], clock)
    s = Series(tmp_path, journal)
    s.add(T0, association="a1")
    journal.mark_association_released("a1")
    clock.now = T0 + 1
    loop.run_once()
    assert s.jobs() == []


def test_expected_count_completes_at_once(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    loop = make_loop(journal, tmp_path, [rule(series_quiet_seconds=600)], clock)
    s = Series(tmp_path, journal, expected=3)
    s.add(T0)
    s.add(T0)
    loop.run_once()
    assert s.jobs() == []
    s.add(T0)
    loop.run_once()
    [job] = s.jobs()
    assert job.trigger == "expected_count"


def test_unmatched_series_is_kept_and_logged_once(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    loop = make_loop(journal, tmp_path, [rule()], clock)
    s = Series(tmp_path, journal, modality="MR")
    s.add(T0)
    s.add(T0)
    clock.now = T0 + 100
    loop.run_once()
    loop.run_once()
    assert s.row().state == "unmatched"
    assert "modality: 'MR' does not fully match 'CT'" in s.row().routing_note
    assert s.jobs() == []
    events = [e for e in journal.recent_events() if e.kind == "series_unmatched"]
    assert len(events) == 1 and events[0].series_uid == s.uid
    assert len(journal.instances_of_series(s.uid)) == 2  # kept


def test_several_matching_rules_make_one_job_each(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    loop = make_loop(
        journal, tmp_path, [rule("a", series_quiet_seconds=2, **{"continue": True}), rule("b")], clock
    )
    s = Series(tmp_path, journal)
    s.add(T0)
    clock.now = T0 + 4
    loop.run_once()
    assert s.jobs() == []  # the longest quiet period of the matched rules applies
    clock.now = T0 + 5
    loop.run_once()
    assert [j.rule_name for j in s.jobs()] == ["a", "b"]


def test_late_arrival_after_a_job_started_reruns_and_supersedes(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    loop = make_loop(journal, tmp_path, [rule(series_quiet_seconds=5)], clock)
    s = Series(tmp_path, journal)
    s.add(T0)
    s.add(T0)
    clock.now = T0 + 5
    loop.run_once()
    first = journal.claim_job(clock.now)
    assert first is not None and first.generation == 2
    # a straggler arrives while the first job runs
    s.add(T0 + 6, association="a2")
    assert s.row().state == "receiving"
    clock.now = T0 + 8
    loop.run_once()
    assert len(s.jobs()) == 1  # quiet period restarted by the late instance
    clock.now = T0 + 11
    loop.run_once()
    jobs = s.jobs()
    assert len(jobs) == 2 and jobs[1].generation == 3 and jobs[1].trigger == "quiet_period"
    seg = DeliverySpec(
        destination="pacs", path="outputs/x.dcm", sop_instance_uid="2.25.1", sop_class_uid="1.2"
    )
    # the stale job finishes last-but-one: superseded, nothing queued
    assert journal.finish_job(first.id, state="done", now=clock.now, deliveries=[seg]) is False
    assert journal.get_job(first.id).state == "superseded"  # type: ignore[index]
    second = journal.claim_job(clock.now)
    assert second is not None and second.id == jobs[1].id
    assert journal.finish_job(second.id, state="done", now=clock.now, deliveries=[seg]) is True
    deliveries = journal.list_deliveries()
    assert [(d.job_id, d.sop_instance_uid) for d in deliveries] == [(second.id, "2.25.1")]


def test_instance_sent_again_after_completion_reruns_the_series(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    loop = make_loop(journal, tmp_path, [rule(series_quiet_seconds=5)], clock)
    s = Series(tmp_path, journal)
    s.add(T0)
    clock.now = T0 + 5
    loop.run_once()
    s.add(T0 + 20, sop_uid=s.sop_uids[0])  # the same instance again: replaced, not duplicated
    assert s.row().instance_count == 1
    clock.now = T0 + 25
    loop.run_once()
    assert [j.generation for j in s.jobs()] == [1, 2]


def test_restart_resumes_a_pending_timer(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    clock = Clock()
    first = Journal(path)
    s = Series(tmp_path, first)
    s.add(T0)
    make_loop(first, tmp_path, [rule(series_quiet_seconds=5)], clock).run_once()
    first.close()  # the node stops (or dies) with the timer running

    second = Journal(path)
    try:
        clock.now = T0 + 3
        loop = make_loop(second, tmp_path, [rule(series_quiet_seconds=5)], clock)
        assert loop.run_once() == pytest.approx(T0 + 5)
        assert second.list_jobs() == []
        clock.now = T0 + 5
        loop.run_once()
        [job] = second.list_jobs()
        assert job.trigger == "quiet_period" and job.series_uid == s.uid
    finally:
        second.close()


def test_rules_reload_reroutes_receiving_series(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    current = {"rules": RuleSet.build([rule("old")])}
    loop = CompletionLoop(journal, storage_dir=tmp_path, rules=lambda: current["rules"], clock=clock)
    s = Series(tmp_path, journal)
    s.add(T0)
    loop.run_once()
    assert s.row().rules == ("old",)
    current["rules"] = RuleSet.build([rule("new", series_quiet_seconds=1)])
    loop.rules_reloaded()
    clock.now = T0 + 1
    loop.run_once()
    assert s.row().rules == ("new",)
    [job] = s.jobs()
    assert job.rule_name == "new"


def test_due_series_whose_rule_vanished_is_routed_again(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    current = {"rules": RuleSet.build([rule("old")])}
    loop = CompletionLoop(journal, storage_dir=tmp_path, rules=lambda: current["rules"], clock=clock)
    s = Series(tmp_path, journal)
    s.add(T0)
    loop.run_once()
    current["rules"] = RuleSet.build([rule("new", series_quiet_seconds=1)])  # no rules_reloaded() call
    clock.now = T0 + 10
    loop.run_once()
    assert [j.rule_name for j in s.jobs()] == ["new"]


def test_unreadable_header_is_reported(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    loop = make_loop(journal, tmp_path, [rule()], clock)
    s = Series(tmp_path, journal)
    s.add(T0)
    (tmp_path / journal.instances_of_series(s.uid)[0].path).write_bytes(b"not dicom")
    loop.run_once()
    assert s.row().state == "error"
    assert "cannot read the header" in s.row().routing_note
    assert journal.recent_events(level="error")[0].kind == "series_unroutable"


def test_thread_wakes_on_new_instances_and_sleeps_until_the_deadline(
    journal: Journal, tmp_path: Path
) -> None:
    woken: list[float] = []
    ruleset = RuleSet.build([rule(series_quiet_seconds=0.3)])
    loop = CompletionLoop(
        journal,
        storage_dir=tmp_path,
        rules=lambda: ruleset,
        on_jobs=lambda: woken.append(time.time()),
        max_poll=30,
    )
    loop.start()
    try:
        s = Series(tmp_path, journal)
        s.add(time.time())
        loop.wake()
        wait_for(lambda: s.row().rules == ("ct",), timeout=10, what="routing")
        job = wait_for(lambda: next(iter(s.jobs()), None), timeout=10, what="job")
        assert job.trigger == "quiet_period"
        assert woken and woken[0] >= s.row().last_received + 0.3
    finally:
        loop.stop()


def nest_in_spool(storage: Path, journal: Journal, series: Series, depth: int) -> None:
    """Append (0040,A730) Content Sequence nested ``depth`` deep to a filed instance (as a spool
    written by an older node, which acknowledged it, would hold it)."""
    path = storage / journal.instances_of_series(series.uid)[0].path
    opening = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    path.write_bytes(path.read_bytes() + opening * depth + closing * depth)


def test_a_series_whose_header_cannot_be_parsed_fails_alone_and_stays_failed_after_a_restart(
    tmp_path: Path,
) -> None:
    from dicom_node.status_report import snapshot, to_text

    clock = Clock()
    journal = Journal(tmp_path / "journal.sqlite")
    bad, good = Series(tmp_path, journal), Series(tmp_path, journal)
    bad.add(T0)
    nest_in_spool(tmp_path, journal, bad, 5000)
    good.add(T0)
    clock.now = T0 + 10
    make_loop(journal, tmp_path, [rule()], clock).run_once()
    assert [j.state for j in good.jobs()] == ["pending"]
    assert bad.row().state == "error" and "nested too deeply" in bad.row().routing_note
    assert bad.jobs() == []
    journal.close()

    journal = Journal(tmp_path / "journal.sqlite")  # a restart
    loop = make_loop(journal, tmp_path, [rule()], clock)
    for _ in range(2):
        loop.run_once()
    bad.journal = good.journal = journal
    assert bad.row().state == "error" and bad.jobs() == []
    assert [e.kind for e in journal.recent_events(level="error")] == ["series_unroutable"]  # once
    report = to_text(snapshot(journal))
    [line] = [ln for ln in report.splitlines() if bad.uid in ln]
    assert "error" in line and "nested too deeply" in line
    journal.close()


class FailingJournal(Journal):
    """A journal whose writes for one series fail (as an I/O error on its pages would)."""

    poisoned = ""

    def set_routing(self, series_uid: str, **kw: Any) -> None:
        if series_uid == self.poisoned:
            raise RuntimeError("disk I/O error")
        super().set_routing(series_uid, **kw)


def test_an_error_while_routing_one_series_does_not_stop_the_others(tmp_path: Path) -> None:
    clock = Clock()
    journal = FailingJournal(tmp_path / "journal.sqlite")
    bad, good = Series(tmp_path, journal), Series(tmp_path, journal)
    bad.add(T0)
    good.add(T0 + 1)
    journal.poisoned = bad.uid
    clock.now = T0 + 10
    loop = make_loop(journal, tmp_path, [rule()], clock)
    loop.run_once()
    loop.run_once()
    assert [j.state for j in good.jobs()] == ["pending"]
    assert bad.row().state == "error"
    assert bad.row().routing_note == "routing failed: RuntimeError: disk I/O error"
    assert [e.kind for e in journal.recent_events(level="error")] == ["series_failed"]
    bad.add(T0 + 20)  # a new instance routes the series again
    journal.poisoned = ""
    clock.now = T0 + 30
    loop.run_once()
    loop.run_once()
    assert [j.state for j in bad.jobs()] == ["pending"]
    journal.close()
