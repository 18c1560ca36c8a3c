"""Large instances stream to disk: the receiver never holds a whole data set in memory, and a data
set abandoned half-way leaves no temp file behind."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from tests.support.instances import make_ct
from tests.support.scp import Node, running_node
from tests.support.tools import dcmtk, peer_env, wait_for

REPO = Path(__file__).resolve().parents[3]
INSTANCE_MB = 128


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running_node(tmp_path / "storage") as n:
        yield n


def _peak_rss_kb(process: subprocess.Popen[str]) -> int:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("\n")
    process.stdin.flush()
    return int(process.stdout.readline())


@pytest.mark.dcmtk
def test_a_large_instance_is_never_held_whole_in_memory(tmp_path: Path) -> None:
    """A 128 MB CT sent by dcmtk storescu to a node in its own process: the node's peak RSS during
    the transfer exceeds its resting RSS by a small fraction of the instance (held in memory, as
    pynetdicom does by default, it grows by the instance's size: 130 MB measured)."""
    side = int((INSTANCE_MB * 1024 * 1024 / 2) ** 0.5)
    ds = make_ct(rows=side, columns=side)
    ds.PixelData = np.zeros((side, side), dtype=np.int16).tobytes()
    big = tmp_path / "big.dcm"
    ds.save_as(big, enforce_file_format=True)
    size = big.stat().st_size
    assert size >= INSTANCE_MB * 1024 * 1024 - 1024 * 1024

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.rss_node", str(tmp_path / "storage")],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().split()[1])
        _peak_rss_kb(process)  # start-up's peak (imports); resets it
        resting = _peak_rss_kb(process)
        sent = subprocess.run(
            [dcmtk("storescu"), "-aec", "NNUNET", "127.0.0.1", str(port), str(big)],
            env=peer_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sent.returncode == 0, sent.stderr
        growth = (_peak_rss_kb(process) - resting) * 1024
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=60)
    (filed,) = (tmp_path / "storage" / "spool").rglob("*.dcm")
    assert filed.stat().st_size >= size - 1024  # the whole data set, behind our own file meta
    assert growth < size / 8, f"peak RSS grew by {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB instance"


def _c_store_rq(ds: Dataset, message_id: int = 1) -> bytes:
    from pynetdicom.dsutils import encode

    cmd = Dataset()
    cmd.AffectedSOPClassUID = ds.SOPClassUID
    cmd.CommandField = 0x0001
    cmd.MessageID = message_id
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = ds.SOPInstanceUID
    body = encode(cmd, True, True)
    assert body is not None
    group_length = Dataset()
    group_length.CommandGroupLength = len(body)
    head = encode(group_length, True, True)
    assert head is not None
    return head + body


def _p_data(context_id: int, control: int, payload: bytes) -> bytes:
    pdv = (len(payload) + 2).to_bytes(4, "big") + bytes([context_id, control]) + payload
    return b"\x04\x00" + len(pdv).to_bytes(4, "big") + pdv


@pytest.mark.parametrize("path", ["fast path", "pynetdicom"])
def test_a_data_set_abandoned_half_way_leaves_no_temp_file(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The sender aborts after the command and part of the data set: the temp file it was being
    written to is removed, whether the receive fast path wrote it (into the spool's temp folder) or
    pynetdicom did (pynetdicom itself only removes the files of complete C-STOREs)."""
    receiving = tmp_path / "receiving"
    receiving.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(receiving))
    if path == "pynetdicom":
        assert node.server._server is not None
        monkeypatch.setattr(node.server._server, "store_target", None)
        temp_files = lambda: list(receiving.glob("*.dcm"))  # noqa: E731
    else:
        temp_files = lambda: list((node.storage / "spool" / ".tmp").iterdir())  # noqa: E731
    ds = make_ct()
    ae = AE(ae_title="HALFWAY")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    sock = assoc.dul.socket.socket
    sock.sendall(_p_data(context_id, 0x03, _c_store_rq(ds)))
    sock.sendall(_p_data(context_id, 0x00, b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"))
    wait_for(temp_files, timeout=30, what="the temp file of the data set")
    assoc.abort()
    wait_for(lambda: not temp_files(), timeout=30, what="the temp file to be removed")
    assert node.spool_files() == []
    assert node.journal.counts().instances == 0
