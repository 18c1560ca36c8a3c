"""dicom_node.demo.store_receiver: the demo's destination accepts C-STOREs from dcmtk and writes them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicom_node.demo.store_receiver import StoreReceiver
from tests.support.tools import dcmtk, peer_env


@pytest.mark.dcmtk
def test_receives_from_storescu_writes_the_file_and_wakes_waiters(tmp_path: Path) -> None:
    src = Path(str(get_testdata_file("CT_small.dcm")))
    expected = dcmread(src)
    with StoreReceiver(tmp_path / "in", ae_title="DEMOPACS") as receiver:
        assert receiver.port > 0
        assert receiver.wait_for(lambda got: bool(got), timeout=0.2) is None
        proc = subprocess.run(
            [
                dcmtk("storescu"),
                "-aet",
                "SENDER",
                "-aec",
                "DEMOPACS",
                "127.0.0.1",
                str(receiver.port),
                str(src),
            ],
            env=peer_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        got = receiver.wait_for(lambda items: len(items) == 1, timeout=30)
    assert got is not None
    item = got[0]
    assert item.sop_instance_uid == str(expected.SOPInstanceUID)
    assert item.calling_ae == "SENDER"
    assert item.path == tmp_path / "in" / f"{expected.SOPInstanceUID}.dcm"
    written = dcmread(item.path)
    assert written.PixelData == expected.PixelData
    assert written.file_meta.TransferSyntaxUID == expected.file_meta.TransferSyntaxUID
    assert list((tmp_path / "in").glob("*.part")) == []
