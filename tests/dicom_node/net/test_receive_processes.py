"""node.receive_processes: the node hands each connection to the least busy receive process; the
extra processes file into the same spool and journal, tell the node's completion loop what they
filed, stop with the node, and die with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node.config import config_from_mapping
from dicom_node.errors import ConfigError
from dicom_node.net import dimse_status as st
from dicom_node.net.receive_processes import ReceiveProcesses
from dicom_node.node import Node
from dicom_node.storage.journal import Journal
from tests.support.certificates import make_pki
from tests.support.instances import make_ct
from tests.support.node_process import start_node, write_config
from tests.support.node_setup import parse_acknowledged, phantom_series, storescu, storescu_command
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
    others = running.receive_processes
    assert others is not None and running.server is not None
    [child] = others.pids
    from_child = _child_instances(others)
    files = phantom_series(tmp_path / "ct", slices=12)
    with _held(running.server.port) as held:  # the node is busier now: the next connection goes to the child
        _wait_owners(running.server.port, held, [child], [os.getpid()])
        sent = storescu(running.server.port, files)
    assert sent.returncode == 0, sent.output
    assert len(sent.acknowledged) == 12
    assert running.journal is not None
    assert running.journal.counts().instances == 12
    assert len(list((tmp_path / "var" / "spool").rglob("*.dcm"))) == 12
    wait_for(lambda: len(from_child) == 12, timeout=30, what="the child's instance events")
    wait_for(lambda: len(instances) == 12 and len(released) == 1, timeout=30, what="the events at the node")
    wait_for(lambda: others.open_connections() == {0: 0, 1: 0}, timeout=30, what="both connections ended")
    running.stop()
    assert not _alive(child)


def test_a_receive_process_that_dies_is_started_again(
    node: tuple[Node, list[str], list[str]], tmp_path: Path
) -> None:
    """Its connections are no longer counted, and connections go to the new one once it is ready."""
    running, _, _ = node
    others = running.receive_processes
    assert others is not None and running.server is not None
    others.restart_after = 0.0
    [first] = others.pids
    from_child = _child_instances(others)
    files = phantom_series(tmp_path / "ct", slices=4)
    with _held(running.server.port, count=2):  # one in each process
        assert others.open_connections() == {0: 1, 1: 1}
        os.kill(first, signal.SIGKILL)
        [second] = wait_for(
            lambda: [p for p in others.serving if p != first], timeout=60, what="a new one ready"
        )
        assert others.open_connections() == {0: 1, 1: 0}
        sent = storescu(running.server.port, files)  # the new receive process's turn
    assert sent.returncode == 0, sent.output
    wait_for(lambda: len(from_child) == 4, timeout=30, what="the new process's events")
    assert _alive(second)


def test_four_connections_at_once_are_served_two_by_each_process(
    node: tuple[Node, list[str], list[str]], tmp_path: Path
) -> None:
    """Which process holds the node's end of each TCP connection is read from /proc: not the
    node's own count, and not the kernel's choice (a hash split 3+1 or 4+0 often)."""
    running, _, released = node
    others = running.receive_processes
    assert others is not None and running.server is not None
    [child] = others.pids
    port = running.server.port
    from_child = _child_instances(others)
    with _held(port, count=4) as held:
        _wait_owners(port, held, [child], [os.getpid(), os.getpid(), child, child])
        assert others.open_connections() == {0: 2, 1: 2}
        for assoc in held:  # each serves a real C-STORE where it is
            assert assoc.send_c_store(make_ct()).Status == st.SUCCESS
    wait_for(lambda: len(released) == 4, timeout=30, what="4 releases")
    assert len(from_child) == 2
    assert running.journal is not None and running.journal.counts().instances == 4
    wait_for(lambda: others.open_connections() == {0: 0, 1: 0}, timeout=30, what="the counts back to 0")


def test_a_connection_for_a_child_that_died_meanwhile_is_served_by_the_node(
    node: tuple[Node, list[str], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, _, _ = node
    others = running.receive_processes
    assert others is not None and running.server is not None
    [child] = others.pids
    port = running.server.port
    # the node only learns of the child's end when we let it (so it still counts the child as ready)
    let_go = threading.Event()
    ended = ReceiveProcesses._ended

    def ended_later(self: ReceiveProcesses, which: Any) -> None:
        let_go.wait(60)
        ended(self, which)

    monkeypatch.setattr(ReceiveProcesses, "_ended", ended_later)
    try:
        with _held(port) as first:  # the node's: the next one is the child's turn
            os.kill(child, signal.SIGKILL)
            # reaped (by the node's reader of its events), not only a zombie: a zombie's other
            # threads may still be exiting, its end of the socket pair still open
            wait_for(lambda: not _exists(child), timeout=30, what="the child reaped")
            with _held(port) as second:
                _wait_owners(port, second, [child], [os.getpid()])
                assert second[0].send_c_store(make_ct()).Status == st.SUCCESS
            assert first[0].is_established
    finally:
        let_go.set()
    assert running.journal is not None and running.journal.counts().instances == 1


def test_a_tls_connection_handed_to_a_child_is_served_there_with_the_node_s_certificates(
    tmp_path: Path,
) -> None:
    """The node passes the connection before any TLS byte: the child runs the handshake itself."""
    pki = make_pki(tmp_path / "pki")
    tls = pki.node_tls()
    files = phantom_series(tmp_path / "ct", slices=4)
    running = Node(config_from_mapping(_config(tmp_path / "var", tls=tls), base_dir=tmp_path))
    running.start()
    try:
        others = running.receive_processes
        assert others is not None and running.server is not None
        from_child = _child_instances(others)
        with socket.create_connection(("127.0.0.1", running.server.port)):  # the node's (never handshakes)
            wait_for(lambda: others.open_connections() == {0: 1, 1: 0}, timeout=30, what="the node's one")
            tool, *arguments = storescu_command(running.server.port, files)
            client = ["+tls", str(pki.client.key), str(pki.client.certificate), "+cf", str(pki.ca)]
            sent = subprocess.run(
                [tool, *client, *arguments],
                env=peer_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_for(lambda: len(from_child) == 4, timeout=30, what="the child's instance events")
    finally:
        running.stop()


def test_connection_limits_apply_per_process_and_a_refused_connection_is_not_counted(
    tmp_path: Path,
) -> None:
    """One pending connection per process: the first two are served (one each), the third is the
    node's turn again and its gate refuses it; the node's count stays true."""
    config = _config(
        tmp_path / "var", max_pending_connections=1, max_pending_per_peer=1, acse_timeout_seconds=15
    )
    running = Node(config_from_mapping(config, base_dir=tmp_path))
    running.start()
    try:
        others = running.receive_processes
        assert others is not None and running.server is not None
        port = running.server.port
        with ExitStack() as stack:
            for expected in ({0: 1, 1: 0}, {0: 1, 1: 1}):
                stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                wait_for(lambda e=expected: others.open_connections() == e, timeout=30, what=str(expected))
            refused = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            refused.settimeout(30)
            assert refused.recv(1) == b"", "closed by the node's gate"
            wait_for(lambda: others.open_connections() == {0: 1, 1: 1}, timeout=30, what="not counted")
        wait_for(lambda: others.open_connections() == {0: 0, 1: 0}, timeout=60, what="all ended")
    finally:
        running.stop()


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


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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


def _child_instances(others: ReceiveProcesses) -> list[str]:
    """Records the instance events that come from the receive processes (not the node's own)."""
    seen: list[str] = []
    forward = others.on_instance

    def record(series: str) -> None:
        seen.append(series)
        forward(series)

    others.on_instance = record
    return seen


class _held:
    """``count`` associations to the node opened at once, established until the block ends."""

    def __init__(self, port: int, count: int = 1) -> None:
        self.port = port
        self.count = count
        self._stack = ExitStack()

    def __enter__(self) -> list[Association]:
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context(Verification)
        ae.add_requested_context(CTImageStorage)
        held: list[Association | None] = [None] * self.count

        def associate(i: int) -> None:
            held[i] = ae.associate("127.0.0.1", self.port, ae_title="NNUNET")

        threads = [threading.Thread(target=associate, args=(i,)) for i in range(self.count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assocs = [a for a in held if a is not None]
        for assoc in assocs:
            self._stack.callback(assoc.release)
        assert len(assocs) == self.count and all(a.is_established for a in assocs), "associations"
        return assocs

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _wait_owners(port: int, assocs: list[Association], children: list[int], expected: list[int]) -> None:
    """Wait until the node's ends of the associations' connections are held by the ``expected`` pids
    (in any order; each by one process alone: the node closes its copy of a handed connection just
    after passing it)."""
    wait_for(
        lambda: sorted(_owners(port, assocs, children)) == sorted(expected),
        timeout=30,
        what=f"connections held by {expected} (now {_owners(port, assocs, children)})",
    )


def _owners(port: int, assocs: list[Association], children: list[int]) -> list[int]:
    """For each association, the pid (this process or one of ``children``) that alone holds the
    node's end of its TCP connection, read from /proc; -1 when none or several do."""
    holders: dict[str, set[int]] = {}
    for pid in [os.getpid(), *children]:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # gone
        for fd in fds:
            try:
                holders.setdefault(os.readlink(fd), set()).add(pid)
            except OSError:
                continue
    owners = []
    for assoc in assocs:
        client_port = assoc.dul.socket.socket.getsockname()[1]  # type: ignore[union-attr]
        inodes = _node_end_inodes(port, client_port)
        pids = holders.get(f"socket:[{inodes[0]}]", set()) if len(inodes) == 1 else set()
        owners.append(next(iter(pids)) if len(pids) == 1 else -1)
    return owners


def _node_end_inodes(port: int, client_port: int) -> list[str]:
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if int(local, 16) == port and int(remote, 16) == client_port and fields[9] != "0":
                found.append(fields[9])
    return found
