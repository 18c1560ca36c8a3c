"""node.receive_processes: extra receive processes on the node's port file into the same spool and
journal, tell the node's completion loop what they filed, stop with the node, and die with it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from dicom_node.config import config_from_mapping
from dicom_node.errors import ConfigError
from dicom_node.node import Node
from dicom_node.storage.journal import Journal
from tests.support.node_process import start_node, write_config
from tests.support.node_setup import parse_acknowledged, phantom_series, storescu_command
from tests.support.tools import peer_env, wait_for

pytestmark = pytest.mark.dcmtk


def _config(storage: Path, **node: Any) -> dict[str, Any]:
    return {
        "node": {
            "ae_title": "NNUNET",
            "host": "127.0.0.1",
            "port": 0,
            "storage_dir": str(storage),
            "min_free_disk_mb": 0,
            "receive_processes": 2,
            **node,
        }
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (ended, not reaped yet) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Node, list[str], list[str]]]:
    instances: list[str] = []
    released: list[str] = []
    on_instance, on_released = Node._on_instance, Node._on_released

    def record_instance(self: Node, series: str) -> None:
        instances.append(series)
        on_instance(self, series)

    def record_released(self: Node, association: str) -> None:
        released.append(association)
        on_released(self, association)

    monkeypatch.setattr(Node, "_on_instance", record_instance)
    monkeypatch.setattr(Node, "_on_released", record_released)
    running = Node(config_from_mapping(_config(tmp_path / "var"), base_dir=tmp_path))
    running.start()
    try:
        yield running, instances, released
    finally:
        running.stop()


def test_the_second_process_files_into_the_journal_and_tells_the_node(
    node: tuple[Node, list[str], list[str]], tmp_path: Path
) -> None:
    running, instances, released = node
    assert running.receive_processes is not None and running.server is not None
    [child] = running.receive_processes.pids
    server = running.server._server
    assert server is not None
    server.shutdown()  # the node's own listener goes: every connection now reaches the child
    files = phantom_series(tmp_path / "ct", slices=12)
    sent = subprocess.run(
        storescu_command(running.server.port, files),
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert len(parse_acknowledged(sent.stdout + sent.stderr)) == 12
    assert running.journal is not None
    assert running.journal.counts().instances == 12
    assert len(list((tmp_path / "var" / "spool").rglob("*.dcm"))) == 12
    wait_for(lambda: len(instances) == 12 and len(released) == 1, timeout=30, what="the child's events")
    running.stop()
    assert not _alive(child)


def test_a_receive_process_that_dies_is_started_again(
    node: tuple[Node, list[str], list[str]], tmp_path: Path
) -> None:
    running, instances, _ = node
    others = running.receive_processes
    assert others is not None and running.server is not None
    others.restart_after = 0.0
    [first] = others.pids
    os.kill(first, signal.SIGKILL)
    [second] = wait_for(
        lambda: [p for p in others.listening if p != first], timeout=60, what="a new one listening"
    )
    server = running.server._server
    assert server is not None
    server.shutdown()  # only the new receive process listens now
    files = phantom_series(tmp_path / "ct", slices=4)
    sent = subprocess.run(
        storescu_command(running.server.port, files),
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_for(lambda: len(instances) == 4, timeout=30, what="the new process's events")
    assert _alive(second)


def test_quotas_are_refused_with_several_receive_processes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="receive_processes"):
        config_from_mapping(_config(tmp_path / "var", calling_ae_quota_mb={"CT1": 100}), base_dir=tmp_path)


def test_the_receive_processes_end_when_the_node_is_killed(tmp_path: Path) -> None:
    """kill -9 of the node while 4 associations stream: the other receive process finishes what it
    has and exits (its stdin ends), every instance any sender saw acknowledged is filed, and the
    node starts again on the same storage."""
    storage = tmp_path / "var"
    config = write_config(tmp_path / "node.yaml", _config(storage))
    files = phantom_series(tmp_path / "ct", slices=120)
    node = start_node(config, log_path=tmp_path / "node1.log")
    children = [int(p) for p in _children_of(node.process.pid)]
    assert len(children) == 1, "one extra receive process"
    senders = [
        subprocess.Popen(
            storescu_command(node.port, files[i::4], calling=f"SENDER{i}"),
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(4)
    ]
    try:
        time.sleep(0.3)  # instances are arriving (the assertions below do not depend on when)
        node.process.kill()
        node.process.wait(timeout=30)
    finally:
        outputs = [s.communicate(timeout=60)[0] for s in senders]
    wait_for(lambda: not any(_alive(c) for c in children), timeout=30, what="the receive process to end")
    acknowledged = [p for output in outputs for p in parse_acknowledged(output)]
    journal = Journal(storage / "journal.sqlite", readonly=True)
    try:
        recorded = {r["sop_instance_uid"]: r["path"] for r in journal._query("SELECT * FROM instances")}
    finally:
        journal.close()
    for path in acknowledged:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert uid in recorded and (storage / recorded[uid]).is_file(), f"acknowledged {path.name} lost"
    again = start_node(config, log_path=tmp_path / "node2.log")
    assert again.stop() == 0


def _children_of(pid: int) -> list[str]:
    """Pids whose parent is ``pid`` (from /proc: no procps needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(stat.parent.name)
    return found
