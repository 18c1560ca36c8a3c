"""Who may read the storage folder and which node owns it: created files and folders get the
configured mode (spool, journal and its WAL, outputs), and a second node on one storage folder
refuses to start, naming the first."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.net import dimse_status as st
from dicom_node.net.peers import Peer
from dicom_node.net.scu import send_files
from dicom_node.storage.access import StorageInUseError, apply_permissions, lock_storage
from dicom_node.storage.filing import Spool
from dicom_node.storage.journal import Journal
from tests.support.instances import make_ct
from tests.support.node_process import running_node, write_config
from tests.support.node_setup import model_spec, node_config
from tests.support.tools import peer_env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def restored_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def test_owner_only_files_and_folders(tmp_path: Path, restored_umask: None) -> None:
    storage = tmp_path / "var"
    storage.mkdir(mode=0o755)
    apply_permissions(storage, "owner")
    spool = Spool(storage, fsync=False)
    stored = spool.store([b"x" * 10], "1.2.3", "1.2.3.4", "1.2.3.4.5")
    journal = Journal(storage / "journal.sqlite")
    journal.log_event("info", "test", "a write makes the WAL")
    try:
        assert mode(storage) == 0o700
        assert mode(storage / stored.relpath) == 0o600
        assert mode((storage / stored.relpath).parent) == 0o700
        assert mode(storage / "journal.sqlite") == 0o600
        assert mode(storage / "journal.sqlite-wal") == 0o600
    finally:
        journal.close()


def test_a_second_lock_on_one_storage_folder_is_refused_until_the_first_is_released(tmp_path: Path) -> None:
    first = lock_storage(tmp_path)
    with pytest.raises(StorageInUseError, match=rf"in use by another node \(pid {os.getpid()}\)"):
        lock_storage(tmp_path)
    first.release()
    lock_storage(tmp_path).release()


@pytest.mark.slow
def test_group_readable_node_and_a_second_node_on_its_storage_refused(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    data = node_config(storage, model_spec(tmp_path / "spec"), 9)
    data["node"]["storage_permissions"] = "group"
    config = write_config(tmp_path / "node.yaml", data)
    ct = tmp_path / "ct.dcm"
    make_ct().save_as(ct, enforce_file_format=True)
    with running_node(config, log_path=tmp_path / "node.log") as node:
        [result] = send_files([ct], Peer(node.ae_title, "127.0.0.1", node.port), "STORESCU")
        assert result.status == st.SUCCESS
        second = subprocess.run(
            [sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(config)],
            env=peer_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert f"in use by another node (pid {node.process.pid})" in second.stderr
        [spooled] = (storage / "spool").rglob("*.dcm")
        assert mode(storage) == 0o750
        assert mode(spooled) == 0o640 and mode(spooled.parent) == 0o750
        assert mode(storage / "journal.sqlite") == 0o640
        assert mode(storage / "outputs") == 0o750
    assert list((storage / "spool").rglob("*.dcm")) == [spooled]  # the second start removed nothing
