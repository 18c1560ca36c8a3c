"""dicom_node.demo.latency: stage timings of a series from the journal add up to the end-to-end time."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.demo.latency import series_latency
from dicom_node.storage.journal import DeliverySpec, InstanceRecord, JobSpec, Journal
from tests.support.journal_rows import instance_record

SERIES = "1.2.3.4"


def _instance(n: int, at: float) -> InstanceRecord:
    return instance_record(f"1.2.3.4.{n}", SERIES, study="1.2.3", at=at, assoc="a1", description="Phantom CT")


def test_stages_from_a_journaled_run(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    for n, at in enumerate((100.0, 100.5, 101.0)):
        journal.record_instance(_instance(n, at))
    journal.set_routing(SERIES, rules=["demo"], quiet_seconds=2.0)
    assert series_latency(journal, SERIES) is None  # no job yet
    spec = JobSpec(rule_name="demo", models=["demo"], destinations=["pacs"], args={})
    generation = journal.get_series(SERIES).generation  # type: ignore[index]
    (job_id,) = journal.create_jobs(
        SERIES, generation=generation, jobs=[spec], trigger="quiet_period", now=103.0
    )
    job = journal.claim_job(now=103.5)
    assert job is not None and job.id == job_id
    timings = {"load": 1.0, "inference": 2.0, "seg_write": 0.5, "total": 3.8, "job": 4.0}
    delivery = DeliverySpec(
        destination="pacs", path="outputs/x.dcm", sop_instance_uid="9.9", sop_class_uid="1.2"
    )
    journal.finish_job(job_id, state="done", now=107.5, timings=timings, deliveries=[delivery])
    (claimed,) = journal.claim_deliveries(now=107.6)
    journal.finish_delivery(int(claimed.id), ok=True, now=108.0, status=0)

    lat = series_latency(journal, SERIES, accepted_at=107.9)
    assert lat is not None
    assert lat.instances == 3 and lat.last_instance_at == 101.0 and lat.trigger == "quiet_period"
    stages = dict(lat.stages())
    assert stages["completion (quiet_period)"] == pytest.approx(2.0)
    assert stages["queue"] == pytest.approx(0.5)
    assert (stages["load"], stages["inference"], stages["seg_write"]) == (1.0, 2.0, 0.5)
    assert "total" not in stages and "job" not in stages  # sums, not stages
    assert stages["other (job)"] == pytest.approx(0.5)  # 4 s job minus 3.5 s of executor stages
    assert stages["sending"] == pytest.approx(0.4)  # accepted at the destination
    assert lat.total == pytest.approx(6.9)
    assert sum(stages.values()) == pytest.approx(lat.total)
    # without the destination's time, the delivery's end counts
    assert series_latency(journal, SERIES).total == pytest.approx(7.0)  # type: ignore[union-attr]
    journal.close()
