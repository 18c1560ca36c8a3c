"""The receive fast path (dicom_node.net.fastpath) on real associations: installed on every plain TCP
connection, messages and releases handled as before, large data sets read whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicom_node.net import dimse_status as st
from dicom_node.net import fastpath
from tests.support.instances import dataset_bytes, make_ct
from tests.support.scp import running_node
from tests.support.tools import wait_for


def test_the_installed_pynetdicom_is_one_the_fast_path_knows() -> None:
    # if this fails after an upgrade, re-read fastpath.py against the new pynetdicom first
    assert fastpath.supported()


def test_accepted_associations_run_on_the_fast_path(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage") as node:
        ae = AE(ae_title="FASTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
        assert assoc.is_established
        try:
            [server_side] = wait_for(lambda: node.server.active_associations(), timeout=10)
            assert isinstance(server_side, fastpath.QueueWaitingAssociation)
            assert isinstance(server_side.dul, fastpath.WakingDUL)
            assert isinstance(server_side.dul.socket, fastpath.BufferedAssociationSocket)
            assert assoc.send_c_echo().Status == st.SUCCESS
        finally:
            assoc.release()


def test_every_release_is_reported_once(tmp_path: Path) -> None:
    """The peer's close after our A-RELEASE-RP must not race the released callback."""
    with running_node(tmp_path / "storage") as node:
        ae = AE(ae_title="FASTSCU")
        ae.add_requested_context(CTImageStorage)
        for _ in range(20):
            assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
            assert assoc.is_established
            assert assoc.send_c_store(make_ct()).Status == st.SUCCESS
            assoc.release()
        wait_for(lambda: len(node.released) >= 20, timeout=20, what="20 released callbacks")
        assert len(set(node.released)) == 20


@pytest.mark.parametrize("max_pdu", [4096, 65536])
def test_a_data_set_over_many_pdus_is_filed_byte_for_byte(tmp_path: Path, max_pdu: int) -> None:
    with running_node(tmp_path / "storage", max_pdu_bytes=max_pdu) as node:
        ds = make_ct()
        ds.Rows = ds.Columns = 300
        ds.PixelData = bytes(range(256)) * (300 * 300 * 2 // 256) + b"\x01" * (300 * 300 * 2 % 256)
        ae = AE(ae_title="FASTSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
        try:
            assert assoc.send_c_store(ds).Status == st.SUCCESS
        finally:
            assoc.release()
        [stored] = node.spool_files()
        sent = tmp_path / "sent.dcm"
        ds.save_as(sent, enforce_file_format=True)
        assert dataset_bytes(stored) == dataset_bytes(sent)
