"""The receive fast path (dicom_node.net.fastpath) on real associations: installed on every plain TCP
connection, messages and releases handled as before, large data sets read whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicom_node.net import dimse_status as st
from dicom_node.net import fastpath
from tests.support.instances import dataset_bytes, make_ct, uid_checks_relaxed
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


def _pynetdicom_command(primitive: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    [pdata] = list(message.encode_msg(1, 0))
    [(_, pdv)] = pdata.presentation_data_value_list
    return bytes(pdv[1:])


def _store_rsp(**fields: object) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = "1.2.3.4.55"
    rsp.Status = 0x0000
    for name, value in fields.items():
        setattr(rsp, name, value)
    return rsp


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"AffectedSOPInstanceUID": "1.2.3.4.5"},  # odd length: padded with NUL
        {"MessageIDBeingRespondedTo": 65535, "AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.1.4"},
        {"AffectedSOPClassUID": None, "AffectedSOPInstanceUID": None},  # both optional in a response
    ],
)
def test_a_store_success_response_is_encoded_as_pynetdicom_encodes_it(fields: dict[str, object]) -> None:
    rsp = _store_rsp(**fields)
    assert fastpath.encode_store_success(rsp) == _pynetdicom_command(rsp)


@pytest.mark.parametrize(
    "fields",
    [{"Status": 0xA700}, {"Status": 0xB000}, {"ErrorComment": "why"}, {"MessageIDBeingRespondedTo": None}],
)
def test_other_messages_are_left_to_pynetdicom(fields: dict[str, object]) -> None:
    assert fastpath.encode_store_success(_store_rsp(**fields)) is None


def test_failure_statuses_still_reach_the_peer_with_their_comment(tmp_path: Path) -> None:
    """A refused instance goes through pynetdicom's own encoder: its status and comment arrive."""
    with running_node(tmp_path / "storage") as node:
        ds = make_ct()
        ds.SOPInstanceUID = "1.2.3.bad..uid"  # invalid UID: refused with a comment
        ae = AE(ae_title="FASTSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
        try:
            with uid_checks_relaxed():
                rsp = assoc.send_c_store(ds)
            assert rsp.Status not in (st.SUCCESS, None) and rsp.ErrorComment
            good = assoc.send_c_store(make_ct())
            assert good.Status == st.SUCCESS and "ErrorComment" not in good
        finally:
            assoc.release()
