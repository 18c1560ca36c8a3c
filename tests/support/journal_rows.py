"""Rows and small steps for the journal's tests: instance records, deliveries, queued jobs, counts."""

from __future__ import annotations

from typing import Any

from dicom_node.storage.journal import DeliverySpec, InstanceRecord, JobSpec, JobState, Journal, Trigger

CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
EVLE = "1.2.840.10008.1.2.1"
STUDY = "1.2.826.0.1.3680043.9.7777.1"
SA = "1.2.826.0.1.3680043.9.7777.1.1"
SB = "1.2.826.0.1.3680043.9.7777.1.2"
SC = "1.2.826.0.1.3680043.9.7777.1.3"
SPEC = JobSpec("ct-demo", ["demo"], ["pacs"], {"tta": False})


def instance_record(
    sop: str,
    series: str = SA,
    *,
    study: str = STUDY,
    at: float = 100.0,
    path: str | None = None,
    assoc: str | None = "assoc-1",
    expected: int | None = None,
    size: int = 10,
    called_ae: str = "NNUNET",
    calling_ae: str = "STORESCU",
    modality: str = "CT",
    description: str = "Abdomen",
    acquisition: str = "",
    digest: str | None = None,
    sop_class: str = CT,
) -> InstanceRecord:
    """The one way tests build an :class:`InstanceRecord` (a CT instance unless told otherwise)."""
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid=sop_class,
        series_uid=series,
        study_uid=study,
        transfer_syntax=EVLE,
        path=path or f"spool/{study}/{series}/{sop}.dcm",
        size=size,
        called_ae=called_ae,
        calling_ae=calling_ae,
        association_id=assoc,
        received_at=at,
        modality=modality,
        series_description=description,
        expected_count=expected,
        acquisition=acquisition,
        digest=digest if digest is not None else f"content-of-{sop}-{size}",
    )


def delivery(sop: str = "2.25.1", destination: str = "pacs", path: str | None = None) -> DeliverySpec:
    return DeliverySpec(
        destination=destination, path=path or f"outputs/{sop}.dcm", sop_instance_uid=sop, sop_class_uid=SEG
    )


def pick(row: object | None, *keys: str) -> tuple[Any, ...]:
    """The values of ``keys`` in a journal row (which must exist)."""
    assert row is not None
    return tuple(getattr(row, k) for k in keys)


def true_counts(j: Journal) -> dict[str, int]:
    rows = j._query("SELECT series_uid, COUNT(*) AS n FROM instances GROUP BY series_uid")
    return {r["series_uid"]: r["n"] for r in rows}


def kept_counts(j: Journal) -> dict[str, int]:
    return {s.series_uid: s.instance_count for s in j.list_series() if s.instance_count}


def queued(j: Journal, series: str = SA, *, now: float = 200.0, n: int = 1) -> list[int]:
    """Route the series and queue ``n`` jobs for its current generation."""
    j.set_routing(series, rules=["ct-demo"], quiet_seconds=10)
    s = j.get_series(series)
    assert s is not None
    return j.create_jobs(
        series, generation=s.generation, jobs=[SPEC] * n, trigger=Trigger.QUIET_PERIOD, now=now
    )


def finished_job_with(journal: Journal, deliveries: list[DeliverySpec], now: float = 300.0) -> int:
    journal.record_instance(instance_record("1.1"))
    queued(journal)
    job = journal.claim_job(now=now)
    assert job is not None
    journal.finish_job(job.id, state=JobState.DONE, now=now, deliveries=deliveries)
    return job.id
