"""kill -9 while a sender is in the middle of an instance: every instance acknowledged before the kill
is on disk and in the journal, before and after a restart, and the sender's retry completes the
series without duplicates. ``dicom-node serve`` runs as a real subprocess without models (receiving
needs none), so this runs in the quick suite.

The kill lands at a known point, not after a delay: the sender (dcmtk storescu) sends five small
instances, then a large one, and the node is killed once the spool temp file the receive fast path
writes the large one into holds over a megabyte of it."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from dicom_node.storage.journal import Journal
from tests.support.instances import make_ct, write_series
from tests.support.node_process import NodeProcess, start_node, write_config
from tests.support.node_setup import parse_acknowledged, phantom_series, storescu, storescu_command
from tests.support.tools import peer_env, wait_for

pytestmark = pytest.mark.dcmtk

BEFORE = 5


def journaled(storage: Path) -> dict[str, str]:
    """SOP Instance UID -> spool path of every journaled instance (read-only, as ``status`` reads)."""
    journal = Journal(storage / "journal.sqlite", readonly=True)
    try:
        rows = journal._query("SELECT sop_instance_uid, path FROM instances")
    finally:
        journal.close()
    return {r["sop_instance_uid"]: r["path"] for r in rows}


def assert_filed(storage: Path, files: list[Path]) -> None:
    recorded = journaled(storage)
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert uid in recorded, f"acknowledged {path.name} missing from the journal"
        assert (storage / recorded[uid]).is_file(), f"acknowledged {path.name}: no spool file"


def test_acknowledged_instances_survive_kill_9_mid_transfer(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    receiving = storage / "spool" / ".tmp"
    config = write_config(
        tmp_path / "node.yaml",
        {"node": {"ae_title": "NNUNET", "host": "127.0.0.1", "port": 0, "storage_dir": str(storage)}},
    )
    small = write_series(tmp_path / "ct", BEFORE)
    big = make_ct(rows=4096, columns=4096)  # 32 MB: long enough to be caught mid-transfer
    big.PixelData = np.zeros((4096, 4096), dtype=np.int16).tobytes()
    big.save_as(tmp_path / "ct" / "big.dcm", enforce_file_format=True)
    files = [*small, tmp_path / "ct" / "big.dcm"]

    node = start_node(
        config,
        log_path=tmp_path / "node1.log",
    )
    try:
        sender = subprocess.Popen(
            storescu_command(node.port, files),
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_for(
                lambda: any(size(p) > 1024 * 1024 for p in receiving.glob("*.part")),
                timeout=60,
                interval=0.01,
                what="the large instance arriving",
            )
            kill9(node)
        finally:
            output, _ = sender.communicate(timeout=60)
    finally:
        if node.process.poll() is None:
            node.process.kill()
            node.process.wait(timeout=30)
    acknowledged = parse_acknowledged(output)
    assert acknowledged == small, output  # storescu waits for each answer: the small ones, only them
    assert_filed(storage, acknowledged)

    node = start_node(
        config,
        log_path=tmp_path / "node2.log",
    )
    try:
        assert_filed(storage, acknowledged)  # start-up reconciliation lost nothing either
        run = storescu(node.port, files)  # the sender tries again, as modalities do
        assert run.returncode == 0 and run.acknowledged == files, run.output
    finally:
        assert node.stop() == 0
    assert_filed(storage, files)
    assert len(journaled(storage)) == len(files)  # re-sent instances replaced, not duplicated
    assert not list((storage / "spool" / ".tmp").iterdir())


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a small instance's temp file, filed and removed meanwhile
        return 0


def journaled_count(storage: Path) -> int:
    """How many instances are journaled; 0 while the journal is not made yet."""
    if not (storage / "journal.sqlite").exists():
        return 0
    try:
        return len(journaled(storage))
    except sqlite3.Error:
        return 0  # being created by the node's start-up


def kill9(node: NodeProcess) -> None:
    node.process.kill()
    node.process.wait(timeout=30)
    assert node.process.returncode == -9


def test_acknowledged_instances_survive_kill_9_during_four_associations(tmp_path: Path) -> None:
    """kill -9 while 4 storescu associations send at once: every instance any of them saw
    acknowledged is on disk and in the journal, before and after the restart."""
    storage = tmp_path / "var"
    config = write_config(
        tmp_path / "node.yaml",
        {"node": {"ae_title": "NNUNET", "host": "127.0.0.1", "port": 0, "storage_dir": str(storage)}},
    )
    files = phantom_series(tmp_path / "ct", slices=160)
    shares = [files[i::4] for i in range(4)]
    node = start_node(config, log_path=tmp_path / "node1.log")
    try:
        senders = [
            subprocess.Popen(
                storescu_command(node.port, share, calling=f"SENDER{i}"),
                env=peer_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i, share in enumerate(shares)
        ]
        try:
            wait_for(
                lambda: journaled_count(storage) >= 20,
                timeout=60,
                interval=0.01,
                what="instances arriving on 4 associations",
            )
            kill9(node)
        finally:
            outputs = [s.communicate(timeout=60)[0] for s in senders]
    finally:
        if node.process.poll() is None:
            node.process.kill()
            node.process.wait(timeout=30)
    per_sender = [parse_acknowledged(output) for output in outputs]
    acknowledged = [path for acked in per_sender for path in acked]
    print(f"acknowledged before the kill, per association: {[len(a) for a in per_sender]} of {len(files)}")
    assert len(acknowledged) < len(files), "the kill did not land during the receive"
    assert sum(1 for acked in per_sender if acked) >= 2, "fewer than 2 associations were streaming"
    assert_filed(storage, acknowledged)
    node = start_node(config, log_path=tmp_path / "node2.log")
    try:
        assert_filed(storage, acknowledged)  # reconciliation at start-up lost nothing either
    finally:
        assert node.stop() == 0
