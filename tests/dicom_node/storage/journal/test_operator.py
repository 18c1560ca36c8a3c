"""The journal's operator operations: filtered job lists with their series, jobs queued for an HTTP
request, and the manual retry/rerun/resend (issue 7's operator actions) refusing what cannot be done."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.storage.journal import DeliveryState, JobSpec, JobState, Journal, SeriesState, Trigger
from tests.support.journal_rows import SA, SB, delivery, finished_job_with, instance_record, queued


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.sqlite")


def test_a_request_job_supersedes_pending_ones_and_queues_the_series(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA))
    [pending] = queued(journal, SA)
    spec = JobSpec("http-request", ["demo"], [], {"use_folds": [0]})
    [job_id] = journal.queue_series_jobs(SA, [spec], trigger=Trigger.HTTP, now=300.0)
    job = journal.get_job(job_id)
    assert job is not None and (job.trigger, job.destinations, dict(job.args)) == (
        Trigger.HTTP,
        (),
        {"use_folds": [0]},
    )
    assert journal.get_job(pending).state == JobState.SUPERSEDED  # type: ignore[union-attr]
    assert journal.get_series(SA).state == SeriesState.QUEUED  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        journal.queue_series_jobs("1.2.3.404", [spec], trigger=Trigger.HTTP, now=300.0)


def test_find_jobs_filters_by_state_rule_ae_and_time_and_brings_the_series(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA, calling_ae="CT1"))
    journal.record_instance(instance_record("2.1", SB, calling_ae="CT2"))
    [a] = queued(journal, SA, now=200.0)
    [b] = queued(journal, SB, now=250.0)
    assert [j.job.id for j in journal.find_jobs()] == [b, a]
    assert [j.job.id for j in journal.find_jobs(ae="CT1")] == [a]
    assert [j.job.id for j in journal.find_jobs(since=220.0)] == [b]
    assert [j.job.id for j in journal.find_jobs(until=220.0)] == [a]
    assert journal.find_jobs(states=[JobState.DONE]) == []
    assert journal.find_jobs(rule="other") == []
    [item] = journal.find_jobs(series_uid=SB)
    assert item.series is not None and item.series.calling_ae == "CT2"


def test_a_pending_job_is_not_retried_and_a_finished_one_runs_again_as_manual(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA))
    [pending] = queued(journal, SA)
    with pytest.raises(ValueError, match="runs already"):
        journal.manual_retry_job(pending, now=300.0)
    with pytest.raises(KeyError):
        journal.manual_retry_job(999, now=300.0)
    done = finished_job_with(journal, [delivery()])
    new = journal.manual_retry_job(done, now=400.0)
    job = journal.get_job(new)
    assert job is not None and (job.state, job.trigger) == (JobState.PENDING, Trigger.MANUAL)


def test_rerun_needs_a_job_that_ran_and_resend_adds_a_delivery(journal: Journal) -> None:
    journal.record_instance(instance_record("1.1", SA))
    with pytest.raises(KeyError, match="no job"):
        journal.manual_rerun_series(SA, rule=None, now=300.0)
    done = finished_job_with(journal, [delivery()])
    [rerun] = journal.manual_rerun_series(SA, rule=None, now=400.0)
    assert journal.get_job(rerun).rule_name == journal.get_job(done).rule_name  # type: ignore[union-attr]
    [d] = journal.deliveries_of_job(done)
    again = journal.manual_resend_delivery(d.id, now=500.0)
    resent = journal.get_delivery(again)
    assert resent is not None and (resent.state, resent.path) == (DeliveryState.PENDING, d.path)
