"""Node endpoints for operators against a running node: job lists and details, series, the operator
actions (the code behind the CLI's retry/resend/rerun), rules reload, and metrics that move as a
study goes through."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
from pydicom import dcmread

from dicom_node.logs import JsonFormatter
from dicom_node.storage.journal import DeliveryState, JobState, SeriesState, Trigger
from tests.dicom_node.http.conftest import AUTH, RunningNode
from tests.support.node_setup import phantom_series, storescu
from tests.support.tools import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if m and m[1] == name and ",".join(sorted((m[2] or "").split(","))).strip(",") == wanted:
            return float(m[3])
    return 0.0


def test_job_details_show_stages_trigger_and_deliveries(running: RunningNode) -> None:
    job_id = running.dicom_job.id
    body = running.client.get(f"/jobs/{job_id}").json()
    assert (body["trigger"], body["rule"], body["state"]) == ("expected_count", "ct-demo", "done")
    assert [s["stage"] for s in body["stages"]][:2] == ["load", "inference"]
    assert body["calling_ae"] == "STORESCU" and body["called_ae"] == "NNUNET"
    [delivery] = body["deliveries"]
    assert (delivery["destination"], delivery["state"], delivery["last_status"]) == ("pacs", "done", 0)


def test_jobs_are_filtered_by_state_rule_ae_and_time(running: RunningNode) -> None:
    def ids(**params: object) -> set[int]:
        r = running.client.get("/jobs", params=params)
        assert r.status_code == 200, r.text
        return {j["id"] for j in r.json()["jobs"]}

    dicom_id = running.dicom_job.id
    assert (
        dicom_id in ids(state="done") and dicom_id in ids(rule="ct-demo") and dicom_id in ids(ae="STORESCU")
    )
    assert dicom_id not in ids(state="failed") | ids(rule="http-request") | ids(ae="SOMEONE")
    created = running.dicom_job.created_at
    assert dicom_id in ids(since=created - 1, until=created + 1)
    assert dicom_id not in ids(since=time.time() + 3600)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created - 60))
    assert dicom_id in ids(since=iso)
    assert running.client.get("/jobs", params={"state": "finished-ish"}).status_code == 422
    assert running.client.get("/jobs", params={"since": "yesterday"}).status_code == 422


def test_series_details_list_its_jobs_and_deliveries(running: RunningNode) -> None:
    uid = running.dicom_job.series_uid
    body = running.client.get(f"/series/{uid}").json()
    assert body["series"]["series_uid"] == uid and body["series"]["calling_ae"] == "STORESCU"
    assert running.dicom_job.id in {j["id"] for j in body["jobs"]}
    assert {d["destination"] for d in body["deliveries"]} == {"pacs"}


def test_operator_actions_queue_work_that_runs(running: RunningNode) -> None:
    series = phantom_series(running.root / "ct-actions", slices=8, seed=3)
    assert storescu(running.node.port, series).returncode == 0
    uid = str(dcmread(series[0], stop_before_pixels=True).SeriesInstanceUID)
    [found] = wait_for(lambda: running.journal.find_jobs(series_uid=uid), timeout=60, what="job")
    job = running.wait_job(found.job.id)
    [delivery] = wait_for(
        lambda: [d for d in running.journal.deliveries_of_job(job.id) if d.state == DeliveryState.DONE],
        timeout=60,
    )

    retried = running.client.post(f"/jobs/{job.id}/retry", headers=AUTH)
    assert retried.status_code == 200, retried.text
    [new_id] = retried.json()["jobs"]
    assert running.wait_job(new_id).state == JobState.DONE
    assert running.wait_job(new_id).trigger == Trigger.MANUAL

    resent = running.client.post(f"/deliveries/{delivery.id}/resend", headers=AUTH)
    assert resent.status_code == 200, resent.text
    [again_id] = resent.json()["deliveries"]
    again = wait_for(
        lambda: (d := running.journal.get_delivery(again_id)) and d.state == DeliveryState.DONE and d,
        timeout=60,
        what="resent delivery",
    )
    assert (again.sop_instance_uid, again.destination, again.last_status) == (
        delivery.sop_instance_uid,
        "pacs",
        0,
    )

    rerun = running.client.post(f"/series/{uid}/rerun", headers=AUTH)
    assert rerun.status_code == 200, rerun.text
    [rerun_id] = rerun.json()["jobs"]
    assert running.wait_job(rerun_id).rule_name == "ct-demo"


def test_an_action_that_cannot_be_done_is_409_with_the_reason(running: RunningNode) -> None:
    unmatched = phantom_series(running.root / "ct-unmatched", slices=4, seed=11, series_description="MR-like")
    assert storescu(running.node.port, unmatched).returncode == 0
    uid = str(dcmread(unmatched[0], stop_before_pixels=True).SeriesInstanceUID)
    wait_for(lambda: (s := running.journal.get_series(uid)) and s.state == SeriesState.UNMATCHED, timeout=60)
    answer = running.client.post(f"/series/{uid}/rerun", headers=AUTH)
    assert answer.status_code == 409 and "no job" in answer.json()["detail"]


def test_metrics_move_as_a_study_goes_through(running: RunningNode) -> None:
    before = running.client.get("/metrics").text
    series = phantom_series(running.root / "ct-metrics", slices=10, seed=5)
    assert storescu(running.node.port, series).returncode == 0
    assert storescu(running.node.port, series[:1], called="WRONG-AE").returncode != 0
    uid = str(dcmread(series[0], stop_before_pixels=True).SeriesInstanceUID)
    [found] = wait_for(lambda: running.journal.find_jobs(series_uid=uid), timeout=60, what="job")
    running.wait_job(found.job.id)
    wait_for(
        lambda: [d for d in running.journal.deliveries_of_job(found.job.id) if d.state == DeliveryState.DONE],
        timeout=60,
    )
    after = running.client.get("/metrics").text

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("dicom_node_instances_received_total") == 10
    assert moved("dicom_node_series_completed_total", trigger="expected_count") == 1
    assert moved("dicom_node_associations_rejected_total", reason="called_ae_unknown") == 1
    for stage in ("quiet_wait", "load", "inference", "seg_write", "job", "send"):
        assert moved("dicom_node_stage_seconds_count", stage=stage) >= 1, stage
    assert metric(after, "dicom_node_jobs", state="done") >= 2
    assert metric(after, "dicom_node_queue_depth", queue="jobs") >= 0


def test_each_hop_logs_one_json_line_with_ids_aes_and_ms(
    running: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    series = phantom_series(running.root / "ct-logs", slices=6, seed=9)
    header = dcmread(series[0], stop_before_pixels=True)
    uid = str(header.SeriesInstanceUID)
    assert storescu(running.node.port, series).returncode == 0
    [found] = wait_for(lambda: running.journal.find_jobs(series_uid=uid), timeout=60, what="job")
    formatter = JsonFormatter()

    def all_hops() -> dict[str, dict[str, object]] | None:
        # a hop's line is written just after its journal commit: poll the log itself
        hops: dict[str, dict[str, object]] = {}
        for record in list(caplog.records):
            line = json.loads(formatter.format(record))
            if line.get("series_uid") == uid or (
                line.get("hop") == "received" and line.get("instances") == 6
            ):
                hops.setdefault(str(line.get("hop")), line)
        return hops if {"received", "series_complete", "job", "delivered"} <= set(hops) else None

    hops = wait_for(all_hops, timeout=120, what="a log line for every hop")
    for record in list(caplog.records):
        assert str(header.PatientName) not in formatter.format(record)
    for hop in ("series_complete", "job", "delivered"):
        assert hops[hop]["job_id"] == found.job.id and isinstance(hops[hop]["ms"], int), hops[hop]
    assert hops["series_complete"]["calling_ae"] == "STORESCU"
    assert hops["delivered"]["destination"] == "pacs"
