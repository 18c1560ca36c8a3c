"""The status snapshot and its text form, beyond what test_cmd_status covers through the command:
info events are left out, the limit applies, an empty journal reads "none", counts "n/m", DIMSE
status in hex, long errors shortened, and the time shown per delivery state."""

from __future__ import annotations

import datetime as dt
import json

from dicom_node.status_report import snapshot, to_json, to_text
from dicom_node.storage.journal import DeliverySpec, JobSpec, Journal
from tests.support.clock import T0
from tests.support.journal_rows import instance_record

SERIES = "1.2.826.0.1.3680043.9.7777.2.1"


def when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def record(j: Journal, sop: str, *, expected: int | None = 4) -> None:
    j.record_instance(
        instance_record(
            sop,
            SERIES,
            study="1.2.826.0.1.3680043.9.7777.2",
            path=f"spool/{sop}.dcm",
            calling_ae="CT01",
            assoc="a",
            at=T0,
            description="Thorax " + "x" * 40,
            expected=expected,
        )
    )


def with_two_deliveries(j: Journal) -> None:
    """A done job with two deliveries: one refused and retried later, one failed for good."""
    record(j, "1.1")
    record(j, "1.2")
    j.set_routing(SERIES, rules=["lungs", "heart"])
    j.create_jobs(
        SERIES, generation=2, jobs=[JobSpec("lungs", ["m"], ["pacs"], {})], trigger="manual", now=T0
    )
    job = j.claim_job(T0)
    assert job is not None
    seg = "1.2.840.10008.5.1.4.1.1.66.4"
    deliveries = [
        DeliverySpec(destination=d, path=f"outputs/{d}.dcm", sop_instance_uid="2.25.9", sop_class_uid=seg)
        for d in ("pacs", "archive")
    ]
    j.finish_job(
        job.id, state="done", now=T0 + 5, timings={"load": 0.25, "inference": 12.0}, deliveries=deliveries
    )
    first, second = j.claim_deliveries(T0 + 5)
    j.finish_delivery(
        first.id, ok=False, now=T0 + 6, status=0xA700, error="out of resources", retry_at=T0 + 60
    )
    j.finish_delivery(second.id, ok=False, now=T0 + 7, status=0xC000, error="E" * 200)


def test_empty_journal(journal: Journal) -> None:
    snap = snapshot(journal)
    assert json.loads(to_json(snap)) == {
        "counts": {"series": {}, "jobs": {}, "deliveries": {}, "instances": {"total": 0}},
        "series": [],
        "jobs": [],
        "deliveries": [],
        "events": [],
    }
    assert to_text(snap).splitlines() == [
        "instances: 0",
        "series: none",
        "jobs: none",
        "deliveries: none",
        "",
        "recent series: none",
        "",
        "jobs: none",
        "",
        "deliveries: none",
        "",
        "last warnings and errors: none",
    ]


def test_only_warnings_and_errors_newest_first_within_the_limit(journal: Journal) -> None:
    for i in range(30):
        journal.log_event("info", "chatter", f"info {i}", now=T0 + i)
    journal.log_event("warning", "delivery_failed", "pacs refused", now=T0 + 100)
    journal.log_event("error", "job_failed", "model crashed", now=T0 + 101)
    snap = snapshot(journal, limit=5)
    assert [e.message for e in snap.events] == ["model crashed", "pacs refused"]
    events = json.loads(to_json(snap))["events"]
    assert set(events[0]) == {"id", "at", "level", "kind", "series_uid", "job_id", "message"}
    text = to_text(snap)
    assert "chatter" not in text
    assert f"  {when(T0 + 101)}  error    job_failed       model crashed" in text


def test_text_shows_counts_progress_status_and_shortened_errors(journal: Journal) -> None:
    with_two_deliveries(journal)
    snap = snapshot(journal)
    [series] = snap.series
    assert (series.instance_count, series.expected_count, series.rules) == (2, 4, ("lungs", "heart"))
    lines = to_text(snap).splitlines()
    assert lines[:4] == [
        "instances: 2",
        "series: queued 1",
        "jobs: done 1",
        "deliveries: failed 1, pending 1",
    ]
    [series_line] = [ln for ln in lines if ln.startswith(f"  {SERIES}")]
    assert series_line.split() == [
        SERIES,
        "CT",
        "Thorax",
        "xxxxxxxxxxxxxxxxxxxx...",
        "2/4",
        "queued",
        "lungs,heart",
    ]
    [job_line] = [ln for ln in lines if "lungs" in ln and "manual" in ln]
    assert job_line.split()[-3:] == ["load=0.2s", "inference=12.0s", "-"]
    [retry] = [ln for ln in lines if " pacs " in ln]
    assert "0xA700" in retry and when(T0 + 60) in retry and "out of resources" in retry  # next attempt
    [failed] = [ln for ln in lines if " archive " in ln]
    assert "0xC000" in failed and when(T0 + 7) in failed  # when it failed
    assert failed.endswith("E" * 77 + "...")


def test_json_round_trips(journal: Journal) -> None:
    with_two_deliveries(journal)
    snap = snapshot(journal)
    data = json.loads(to_json(snap))
    assert data["counts"] == {
        "series": {"queued": 1},
        "jobs": {"done": 1},
        "deliveries": {"pending": 1, "failed": 1},
        "instances": {"total": 2},
    }
    assert data["series"][0]["rules"] == ["lungs", "heart"] and data["series"][0]["state"] == "queued"
    assert [(j["id"], j["state"], j["trigger"]) for j in data["jobs"]] == [
        (snap.jobs[0].id, "done", "manual")
    ]
    assert data["jobs"][0]["timings"] == {"load": 0.25, "inference": 12.0}
    assert {d["last_status"] for d in data["deliveries"]} == {0xA700, 0xC000}


def test_text_escapes_control_characters_from_peers(journal: Journal) -> None:
    """A SeriesDescription with ESC and a newline cannot recolour the terminal or add a line."""
    journal.record_instance(instance_record("1.2.3.9", "1.2.3.8", description="\x1b[31mRED\nFAKE ROW"))
    text = to_text(snapshot(journal))
    assert "\x1b" not in text
    assert not [line for line in text.splitlines() if line.startswith("FAKE ROW")]
    assert "\\x1b[31mRED\\nFAKE" in text
