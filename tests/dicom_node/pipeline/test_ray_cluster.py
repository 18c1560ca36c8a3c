"""The node on a real local Ray cluster (``ray start --head`` plus one worker node, one CPU each):
series sent over DICOM are segmented on predictor actors, dying actors and a dying cluster lose
nothing. One cluster serves the module; the last test kills and restarts it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread

from dicom_node.config import NodeConfig, config_from_mapping
from dicom_node.node import Node
from dicom_node.storage.journal import JobState, Journal
from inference.executor import InferenceRequest, InProcessExecutor
from tests.support.node_setup import node_config, phantom_series, received_segs, storescu
from tests.support.ray_cluster import RayCluster, remove_cluster, start_cluster
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import dciodvfy, free_port, wait_for

pytestmark = pytest.mark.slow

SPEC = Path(__file__).resolve().parents[3] / "model-serve-spec.yaml"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    running = start_cluster(workers=1)
    try:
        yield running
    finally:
        remove_cluster(running)


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "pacs"
    with dcmtk_storescp(port, out):
        yield port, out


def ray_config(tmp_path: Path, dest_port: int, cluster: RayCluster, **executor: Any) -> NodeConfig:
    settings = {
        "kind": "ray",
        "address": cluster.address,
        "actors": 2,
        "max_in_flight": 2,
        "retry_delay_seconds": 1,
        "connect_timeout_seconds": 60,
        **executor,
    }
    data = node_config(tmp_path / "var", SPEC, dest_port, inference={"executor": settings})
    return config_from_mapping(data, base_dir=tmp_path)


def journal_of(node: Node) -> Journal:
    assert node.journal is not None
    return node.journal


def _without_times(ds: Dataset) -> Dataset:
    """The dataset less its dates and times (when the SEG was made), recursively."""
    for element in list(ds):
        if element.VR in ("DA", "TM", "DT"):
            del ds[element.tag]
        elif element.VR == "SQ":
            for item in element.value:
                _without_times(item)
    return ds


def test_a_series_sent_over_dicom_is_segmented_on_an_actor_as_in_process(
    tmp_path: Path, cluster: RayCluster, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=12)
    with Node(ray_config(tmp_path, dest_port, cluster, actors=1)) as node:
        assert storescu(node.port, files).returncode == 0
        [(uid, [seg_path])] = wait_for(lambda: received_segs(out), timeout=180, what="SEG").items()
        [job] = journal_of(node).list_jobs()
    assert job.state == "done"
    assert job.timings["cluster_attempts"] == 1  # ran on the cluster, first try

    local = InProcessExecutor(SPEC, device="cpu").run(
        InferenceRequest(inputs=[files], models=["demo"], output_dir=tmp_path / "local")
    )
    [expected] = [o for o in local.outputs if o.kind == "seg"]
    assert expected.sop_instance_uid == uid
    ours, theirs = dcmread(seg_path), dcmread(expected.path)
    assert ours.PixelData == theirs.PixelData
    assert _without_times(ours) == _without_times(theirs)
    assert dciodvfy(seg_path).errors == []


def test_an_actor_killed_mid_job_the_job_completes_on_a_retry(
    tmp_path: Path, cluster: RayCluster, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=48)
    with Node(ray_config(tmp_path, dest_port, cluster)) as node:
        journal = journal_of(node)
        assert storescu(node.port, files).returncode == 0
        # a fresh actor loads the model, then predicts: seconds during which its title says run
        [victim] = wait_for(lambda: cluster.actor_pids("run"), timeout=180, what="an actor running the job")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: received_segs(out), timeout=240, what="SEG after the retry")
        [job] = journal.list_jobs()
        events = [e.message for e in journal.recent_events(50) if e.kind == "job_warning"]
    assert job.state == "done", job
    assert job.timings["cluster_attempts"] == 2, "the kill came after the job finished"
    assert any("died during attempt 1" in m for m in events), events


def test_jobs_wait_while_the_cluster_is_down_and_complete_after_a_restart(
    tmp_path: Path, cluster: RayCluster, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    first = phantom_series(tmp_path / "ct1", slices=8, seed=1)
    second = phantom_series(tmp_path / "ct2", slices=8, seed=2)
    # shared_path: actors read the spool and write the SEG in place (one machine shares all paths)
    with Node(ray_config(tmp_path, dest_port, cluster, actors=1, data="shared_path")) as node:
        journal = journal_of(node)
        assert storescu(node.port, first).returncode == 0
        wait_for(lambda: len(received_segs(out)) == 1, timeout=180, what="first SEG")

        cluster.stop()
        assert storescu(node.port, second).returncode == 0
        waiting = wait_for(
            lambda: [j for j in journal.list_jobs(state=JobState.PENDING) if j.error],
            timeout=120,
            what="the second job back in the queue with a reason",
        )
        assert cluster.address in (waiting[0].error or ""), waiting[0]  # why it waits

        cluster.restart(workers=0)  # the head alone has room for the one actor
        wait_for(lambda: len(received_segs(out)) == 2, timeout=240, what="second SEG after the restart")
        jobs = journal.list_jobs()
    assert sorted(j.state for j in jobs) == ["done", "done"]
    assert all(len(paths) == 1 for paths in received_segs(out).values())  # nothing sent twice
