"""``dicom-node status``: counts, series, jobs (with their errors), deliveries and last errors, read
from the journal read-only, also while another process writes to it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.uid import SegmentationStorage, generate_uid

from dicom_node.cli import main
from dicom_node.storage.journal import DeliverySpec, JobSpec, Journal
from tests.support.journal_rows import instance_record


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        "node: {ae_title: NNUNET, port: 0, storage_dir: ./var}\n"
        "destinations: {pacs: {ae_title: PACS, host: 127.0.0.1, port: 4242}}\n"
    )
    return cfg


def populate(journal: Journal) -> dict[str, str]:
    """Two series: one whose job failed, one whose delivery keeps failing."""
    now = time.time()
    uids = {"failed": generate_uid(), "sending": generate_uid()}
    for name, series in uids.items():
        journal.record_instance(
            instance_record(
                generate_uid(),
                series,
                study=generate_uid(),
                path=f"spool/{name}.dcm",
                assoc=None,
                at=now,
                description=f"Series {name}",
            )
        )
        journal.set_routing(series, rules=["ct-demo"], quiet_seconds=1)
        journal.create_jobs(
            series,
            generation=1,
            jobs=[JobSpec("ct-demo", ["demo"], ["pacs"], {})],
            trigger="quiet_period",
            now=now,
        )
    job = journal.claim_job(now)
    assert job is not None
    journal.finish_job(job.id, state="failed", now=now, error="SeriesError: only 1 slice")
    journal.log_event("error", "job_failed", f"job {job.id} failed: SeriesError: only 1 slice", job_id=job.id)
    job2 = journal.claim_job(now)
    assert job2 is not None
    journal.finish_job(
        job2.id,
        state="done",
        now=now,
        timings={"inference": 1.5},
        deliveries=[
            DeliverySpec(
                destination="pacs",
                path="outputs/seg.dcm",
                sop_instance_uid="2.25.42",
                sop_class_uid=SegmentationStorage,
            )
        ],
    )
    [d] = journal.claim_deliveries(now)
    journal.finish_delivery(d.id, ok=False, now=now, error="association rejected", retry_at=now + 60)
    return uids


def test_text_report_shows_series_jobs_deliveries_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path)
    journal = Journal(tmp_path / "var" / "journal.sqlite")
    uids = populate(journal)
    journal.close()
    assert main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "instances: 2" in out
    assert "jobs: done 1, failed 1" in out
    assert uids["failed"] in out and uids["sending"] in out
    assert "Series failed" in out
    assert "SeriesError: only 1 slice" in out
    assert "association rejected" in out
    assert "quiet_period" in out and "inference=1.5s" in out


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    journal = Journal(tmp_path / "var" / "journal.sqlite")
    uids = populate(journal)
    journal.close()
    assert main(["status", "--config", str(cfg), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["deliveries"] == {"pending": 1}
    jobs = {j["series_uid"]: j for j in data["jobs"]}
    assert jobs[uids["failed"]]["state"] == "failed"
    assert jobs[uids["failed"]]["error"] == "SeriesError: only 1 slice"
    assert jobs[uids["sending"]]["trigger"] == "quiet_period"
    [delivery] = data["deliveries"]
    assert (delivery["destination"], delivery["attempts"], delivery["last_error"]) == (
        "pacs",
        1,
        "association rejected",
    )
    assert data["events"][0]["kind"] == "job_failed"
    assert {s["series_uid"] for s in data["series"]} == set(uids.values())


def test_works_while_the_journal_is_open_for_writing(tmp_path: Path) -> None:
    """A writer holds the journal open (as the running node does); status in another process reads it
    and sees committed rows; the writer is not disturbed."""
    cfg = write_config(tmp_path)
    journal = Journal(tmp_path / "var" / "journal.sqlite")
    try:
        uids = populate(journal)
        proc = subprocess.run(
            [sys.executable, "-m", "dicom_node.cli", "status", "--config", str(cfg), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert {s["series_uid"] for s in data["series"]} == set(uids.values())
        journal.log_event("info", "still_writable", "the writer goes on")
        assert journal.recent_events(limit=1)[0].kind == "still_writable"
    finally:
        journal.close()


def test_missing_journal_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    assert main(["status", "--config", str(cfg)]) == 1
    assert "no journal at" in capsys.readouterr().err
