"""Rows and small steps for the journal's tests: instance records, deliveries, queued jobs, counts."""

from __future__ import annotations

from typing import Any

from dicom_node.storage.journal import InstanceRecord, JobSpec, Journal

CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
EVLE = "1.2.840.10008.1.2.1"
STUDY = "1.2.826.0.1.3680043.9.7777.1"
SA = "1.2.826.0.1.3680043.9.7777.1.1"
SB = "1.2.826.0.1.3680043.9.7777.1.2"
SC = "1.2.826.0.1.3680043.9.7777.1.3"
SPEC = JobSpec("ct-demo", ["demo"], ["pacs"], {"tta": False})


def rec(
    sop: str,
    series: str = SA,
    *,
    at: float = 100.0,
    path: str | None = None,
    assoc: str | None = "assoc-1",
    expected: int | None = None,
    size: int = 10,
    acquisition: str = "",
    sha256: str | None = None,
    study: str = STUDY,
    sop_class: str = CT,
) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid=sop_class,
        series_uid=series,
        study_uid=study,
        transfer_syntax=EVLE,
        path=path or f"spool/{study}/{series}/{sop}.dcm",
        size=size,
        called_ae="NNUNET",
        calling_ae="STORESCU",
        association_id=assoc,
        received_at=at,
        modality="CT",
        series_description="Abdomen",
        expected_count=expected,
        acquisition=acquisition,
        sha256=sha256 if sha256 is not None else f"content-of-{sop}-{size}",
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


def finished_job_with(journal: Journal, deliveries: list[dict[str, str]], now: float = 300.0) -> int:
    journal.record_instance(rec("1.1"))
    queued(journal)
    job = journal.claim_job(now=now)
    assert job is not None
    journal.finish_job(job["id"], state="done", now=now, deliveries=deliveries)
    return int(job["id"])
