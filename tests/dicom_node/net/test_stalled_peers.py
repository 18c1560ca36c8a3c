"""Hostile and stalled peers against the running SCP: connections that never negotiate cannot lock
real senders out, stalled reads end at their deadline, a stopping node does not wait for them, and a
peer cannot make the node buffer an oversized data set or burn CPU on empty PDVs."""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import AE

from dicom_node.storage.journal import Journal
from tests.support.instances import echo, make_ct, raw_associate
from tests.support.node_process import NodeProcess, start_node, write_config
from tests.support.scp import running_node
from tests.support.tools import dcmtk, peer_env, wait_for

ATTACKER = "127.0.0.2"  # all of 127/8 is loopback: a second peer address on one machine


def stalled_connections(port: int, count: int, *, source: str = ATTACKER) -> list[socket.socket]:
    """``count`` connections that each send one byte of a PDU header and then nothing."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(60)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"\x01")
        socks.append(sock)
    return socks


def closed_by_node(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def dcmtk_echo(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("echoscu"), "-aet", "ECHOSCU", "-aec", "NNUNET", "127.0.0.1", str(port)],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.dcmtk
def test_stalled_connections_from_one_peer_do_not_lock_out_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    options = {"acse_timeout_seconds": 3, "max_pending_connections": 8, "max_pending_per_peer": 4}
    with running_node(tmp_path / "storage", max_associations=2, **options) as node:
        socks = stalled_connections(node.port, 12)
        try:
            started = time.monotonic()
            run = dcmtk_echo(node.port)  # from 127.0.0.1, while the 12 stall
            assert run.returncode == 0, run.stdout + run.stderr
            assert echo(node.port) == 0
            # the 8 over the per-peer limit were closed at once, the 4 admitted at their deadline
            assert all(closed_by_node(s) for s in socks)
            assert time.monotonic() - started < 30  # long before our own 60 s read timeout
        finally:
            for s in socks:
                s.close()
    refusals = [r.getMessage() for r in caplog.records if "refusing connection from" in r.getMessage()]
    assert len(refusals) == 8 and all(ATTACKER in m for m in refusals)
    expired = [r.getMessage() for r in caplog.records if "association request not received" in r.getMessage()]
    assert len(expired) == 4 and all(ATTACKER in m for m in expired)


@pytest.mark.dcmtk
def test_a_peer_stalling_every_slot_is_served_once_its_stalls_expire(tmp_path: Path) -> None:
    """All from one address (the per-peer limit shuts the same peer out too): the C-ECHO succeeds
    within the handshake deadline, when the stalled connections are closed."""
    with running_node(tmp_path / "storage", acse_timeout_seconds=2, max_pending_per_peer=4) as node:
        socks = stalled_connections(node.port, 12, source="127.0.0.1")
        try:
            wait_for(lambda: dcmtk_echo(node.port).returncode == 0, timeout=2 + 20, what="a C-ECHO")
        finally:
            for s in socks:
                s.close()


@pytest.mark.parametrize("stall", ["association request", "P-DATA"])
def test_a_pdu_stalled_midway_is_closed_at_its_deadline(
    tmp_path: Path, stall: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with running_node(tmp_path / "storage", acse_timeout_seconds=1, network_timeout_seconds=1) as node:
        if stall == "P-DATA":
            sock = raw_associate(node.port)
            # a valid PDV item header (252 bytes: context 1, a data fragment), then 100 of the PDU's
            # 256 body bytes
            sock.sendall(b"\x04\x00\x00\x00\x01\x00" + struct.pack(">IBB", 252, 1, 0) + b"\x00" * 94)
        else:
            sock = socket.create_connection(("127.0.0.1", node.port), timeout=60)
            sock.sendall(b"\x01\x00\x00\x00\x01\x00" + b"\x00" * 10)  # 10 of 256 body bytes
        try:
            started = time.monotonic()
            while not closed_by_node(sock):  # an A-ABORT or nothing, then the close
                pass
            assert time.monotonic() - started < 30  # our own read timeout is 60 s
        finally:
            sock.close()
        assert echo(node.port) == 0
    expired = [r.getMessage() for r in caplog.records if "not received within 1 s" in r.getMessage()]
    assert len(expired) == 1 and "127.0.0.1" in expired[0]


def test_association_limit_does_not_count_pending_connections(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage", max_associations=1, acse_timeout_seconds=60) as node:
        socks = stalled_connections(node.port, 4)
        try:
            assert echo(node.port) == 0  # the one association slot is still free
        finally:
            for s in socks:
                s.close()


def test_an_empty_pdv_flood_is_cut_off_quickly(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage") as node:  # max PDU 64 KiB
        sock = raw_associate(node.port)
        body = struct.pack(">IBB", 2, 1, 0) * 10_000  # empty data set fragments, none the last
        flood = b"\x04\x00" + len(body).to_bytes(4, "big") + body
        sent = 0
        try:
            with pytest.raises(OSError):  # the node closes the connection
                while sent < 20 * 1024 * 1024:
                    sock.sendall(flood)
                    sent += len(flood)
            # nothing more is read; the peer got an A-ABORT before the close
        except BaseException:
            sock.close()
            raise
        sock.close()
        assert sent < 8 * 1024 * 1024  # 20 MiB were meant; cut off after what socket buffers hold
        assert echo(node.port) == 0
        refused = [e for e in node.journal.recent_events(level="warning") if e.kind == "pdu_refused"]
        assert len(refused) == 1 and "fragments under" in refused[0].message


# ------------------------------------------------------------------------------- node subprocess


@contextmanager
def node_subprocess(tmp_path: Path, **node_options: object) -> Iterator[NodeProcess]:
    storage = tmp_path / "var"
    config = {
        "node": {
            "ae_title": "NNUNET",
            "host": "127.0.0.1",
            "port": 0,
            "storage_dir": str(storage),
            "min_free_disk_mb": 0,
            **node_options,
        }
    }
    node = start_node(write_config(tmp_path / "node.yaml", config), log_path=tmp_path / "node.log")
    try:
        yield node
    finally:
        node.stop(timeout=30)


@pytest.mark.slow
def test_sigterm_stops_the_node_while_peers_stall(tmp_path: Path) -> None:
    # deadlines far beyond the test: only shutting the stalled connections down ends them in time
    with node_subprocess(tmp_path, acse_timeout_seconds=600, network_timeout_seconds=600) as node:
        socks = stalled_connections(node.port, 12)
        stalled_assoc = raw_associate(node.port)
        stalled_assoc.sendall(b"\x04\x00\x00\x00\x10\x00")  # a P-DATA header, then nothing
        try:
            started = time.monotonic()
            code = node.stop(timeout=60)
            elapsed = time.monotonic() - started
        finally:
            for s in [*socks, stalled_assoc]:
                s.close()
    assert code == 0, node.log()[-3000:]
    assert elapsed < 20, f"the node took {elapsed:.1f} s to stop"


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@pytest.mark.slow
def test_an_oversized_data_set_is_refused_as_it_arrives_with_bounded_memory(tmp_path: Path) -> None:
    limit = 8 * 1024 * 1024
    size = 160 * 1024 * 1024  # 20 times the limit
    with node_subprocess(tmp_path, max_dataset_bytes=limit) as node:
        pid = node.process.pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak RSS count here
        before = _status(pid, "VmRSS")
        ds = make_ct()
        side = int((size // 2) ** 0.5)
        ds.Rows = ds.Columns = side
        ds.PixelData = np.zeros((side, side), dtype=np.int16).tobytes()
        ae = AE(ae_title="BIGSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
        assert assoc.is_established
        try:
            rsp = assoc.send_c_store(ds)
        finally:
            assoc.abort()
        assert "Status" not in rsp  # no answer: the node aborted the association
        del ds
        peak = _status(pid, "VmHWM")
        assert echo(node.port) == 0  # the node goes on
        log = node.log()
    grown = peak - before
    print(f"node RSS {before / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB; {size / 2**20:.0f} MiB sent")
    assert grown < 4 * limit + 32 * 1024 * 1024, f"the node grew by {grown / 2**20:.0f} MiB"
    assert "data set larger than the 8388608 bytes allowed" in log and "127.0.0.1" in log
    storage = tmp_path / "var"
    assert not list((storage / "spool").rglob("*.dcm"))
    journal = Journal(storage / "journal.sqlite", readonly=True)
    try:
        assert journal.counts().instances == 0
    finally:
        journal.close()
