"""Faults, with ``dicom-node serve`` as a real subprocess and the real in-process executor:

- ``kill -9`` while a job runs, while a SEG is being sent; after a restart the series ends with
  exactly one SEG (one file, one SOP Instance UID) at its destination (``kill -9`` during a receive:
  test_kill_during_receive.py, in the quick suite);
- the same series sent twice: still one SEG;
- destination down, then up: the result arrives.

The journal is watched read-only from the test (as ``dicom-node status`` does) to act at the right
moment; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydicom import dcmread

from dicom_node.storage.journal import Journal
from tests.support.node_process import NodeProcess, start_node, write_config
from tests.support.node_setup import (
    model_spec,
    node_config,
    phantom_series,
    received_segs,
    referenced_instances,
    storescu,
)
from tests.support.store_peers import BlockingStoreSCP, dcmtk_storescp
from tests.support.tools import free_port, wait_for
from tests.support.written_files import files_in

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

T = TypeVar("T")


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_spec(tmp_path_factory.mktemp("spec"))


def read_journal(storage: Path, query: Callable[[Journal], T]) -> T | None:
    """One read-only look at the journal (None while it does not exist yet)."""
    path = storage / "journal.sqlite"
    if not path.exists():
        return None
    journal = Journal(path, readonly=True)
    try:
        return query(journal)
    finally:
        journal.close()


@contextmanager
def node_process(config: Path, log: Path) -> Iterator[NodeProcess]:
    node = start_node(config, log_path=log)
    try:
        yield node
    finally:
        if node.process.poll() is None:
            node.stop()


def kill9(node: NodeProcess) -> None:
    node.process.kill()
    node.process.wait(timeout=30)
    assert node.process.returncode == -9


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def wait_for_final_seg(storage: Path, out: Path, files: list[Path], timeout: float = 180) -> Path:
    """The destination holds one SEG that references every instance of the series, and the journal
    has nothing left to do."""
    want = {sop_uid(p) for p in files}

    def settled(j: Journal) -> bool:
        counts = j.counts()
        return not (
            set(counts.jobs) & {"pending", "running"} or set(counts.deliveries) & {"pending", "sending"}
        )

    def ready() -> Path | None:
        segs = received_segs(out)
        if len(segs) != 1:
            assert len(segs) <= 1, f"more than one SEG UID at the destination: {sorted(segs)}"
            return None
        [paths] = segs.values()
        if referenced_instances(paths[-1]) != want:
            return None
        return paths[-1] if read_journal(storage, settled) else None

    return wait_for(ready, timeout=timeout, interval=0.2, what="one SEG of the whole series, journal settled")


def assert_one_seg(out: Path) -> str:
    segs = received_segs(out)
    assert len(segs) == 1, segs
    [(uid, paths)] = segs.items()
    assert len(paths) == 1, paths
    return uid


def test_kill_during_inference(tmp_path: Path, spec: Path) -> None:
    storage = tmp_path / "var"
    dest_port, out = free_port(), tmp_path / "pacs"
    config = write_config(tmp_path / "node.yaml", node_config(storage, spec, dest_port))
    files = phantom_series(tmp_path / "ct", slices=24)
    with dcmtk_storescp(dest_port, out):
        with node_process(config, tmp_path / "node1.log") as node:
            assert storescu(node.port, files).returncode == 0
            wait_for(
                lambda: read_journal(storage, lambda j: j.list_jobs(state="running")),
                timeout=120,
                interval=0.01,
                what="a running job",
            )
            kill9(node)
        assert files_in(out) == []  # nothing, not even a half-written file
        [job] = read_journal(storage, lambda j: j.list_jobs()) or []
        assert job.state == "running" and job.attempts == 1

        with node_process(config, tmp_path / "node2.log"):
            wait_for_final_seg(storage, out, files)
    assert_one_seg(out)
    [job] = read_journal(storage, lambda j: j.list_jobs()) or []
    assert (job.state, job.attempts) == ("done", 2)


def test_kill_during_sending(tmp_path: Path, spec: Path) -> None:
    storage = tmp_path / "var"
    dest_port, out = free_port(), tmp_path / "pacs"
    config = write_config(
        tmp_path / "node.yaml", node_config(storage, spec, dest_port, destination_ae="SLOWPACS")
    )
    files = phantom_series(tmp_path / "ct", slices=12)
    with BlockingStoreSCP(dest_port, out) as pacs:
        with node_process(config, tmp_path / "node1.log") as node:
            assert storescu(node.port, files).returncode == 0
            assert pacs.entered.wait(180), "the SEG never reached the destination"
            sending = read_journal(storage, lambda j: j.list_deliveries(state="sending"))
            assert sending and len(sending) == 1
            kill9(node)  # the destination has the data set but the node never sees the answer
        pacs.release.set()
        with node_process(config, tmp_path / "node2.log"):
            delivered = wait_for(
                lambda: read_journal(storage, lambda j: j.list_deliveries(state="done")),
                timeout=120,
                what="delivery after restart",
            )
        assert pacs.stores == 2  # sent again after the restart...
        [seg] = pacs.files()  # ...to the same SOP Instance UID: still one SEG
        assert delivered[0].attempts == 2
        assert delivered[0].sop_instance_uid == sop_uid(seg)
        assert referenced_instances(seg) == {sop_uid(p) for p in files}


def test_same_series_sent_twice_gives_one_seg(tmp_path: Path, spec: Path) -> None:
    storage = tmp_path / "var"
    dest_port, out = free_port(), tmp_path / "pacs"
    config = write_config(tmp_path / "node.yaml", node_config(storage, spec, dest_port))
    files = phantom_series(tmp_path / "ct", slices=12)
    with dcmtk_storescp(dest_port, out), node_process(config, tmp_path / "node.log") as node:
        assert storescu(node.port, files).returncode == 0
        wait_for_final_seg(storage, out, files)
        first = assert_one_seg(out)
        assert storescu(node.port, files).returncode == 0
        wait_for(
            lambda: len(read_journal(storage, lambda j: j.list_deliveries(state="done")) or []) == 2,
            timeout=120,
            what="second delivery",
        )
        wait_for_final_seg(storage, out, files)
    assert assert_one_seg(out) == first
    deliveries = read_journal(storage, lambda j: j.list_deliveries()) or []
    assert {d.sop_instance_uid for d in deliveries} == {first}
    assert read_journal(storage, lambda j: j.counts().instances) == len(files)


def test_destination_down_then_up(tmp_path: Path, spec: Path) -> None:
    storage = tmp_path / "var"
    dest_port, out = free_port(), tmp_path / "pacs"
    config = write_config(tmp_path / "node.yaml", node_config(storage, spec, dest_port))
    files = phantom_series(tmp_path / "ct", slices=12)
    with node_process(config, tmp_path / "node.log") as node:
        assert storescu(node.port, files).returncode == 0
        failing = wait_for(
            lambda: [
                d
                for d in read_journal(storage, lambda j: j.list_deliveries(state="pending")) or []
                if d.attempts >= 2
            ],
            timeout=120,
            what="failed delivery attempts",
        )
        assert "connection refused" in failing[0].last_error
        status = status_json(config)
        # backoff is short here: by now the sender may be on its next attempt, which keeps the last error
        assert status["deliveries"][0]["state"] in {"pending", "sending"}
        assert "connection refused" in status["deliveries"][0]["last_error"]
        with dcmtk_storescp(dest_port, out):
            wait_for_final_seg(storage, out, files)
    [delivery] = read_journal(storage, lambda j: j.list_deliveries()) or []
    assert delivery.state == "done" and delivery.attempts > 2
    assert_one_seg(out)


def status_json(config: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))
