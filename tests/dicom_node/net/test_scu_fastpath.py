"""The requestor's association thread leaves DIMSE responses to the sender waiting for them (the cause
of the "storescp stall": pynetdicom's own thread took a C-STORE-RSP and dropped it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.net.peers import Peer
from dicom_node.net.scu import send_files
from dicom_node.net.scu_fastpath import SendingAE, store_request_pdus
from tests.support.instances import dcmtk_storescp, write_series
from tests.support.tools import wait_for


@pytest.fixture
def storescp_port(tmp_path: Path) -> Iterator[int]:
    with dcmtk_storescp(tmp_path / "out", "--ignore") as port:
        yield port


def _associate(ae: AE, port: int) -> Association:
    ae.add_requested_context(Verification)
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP")
    assert assoc.is_established
    return assoc


def _store_response() -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.Status = 0x0000
    return rsp


def _count_turns(assoc: Association) -> Callable[[], int]:
    turns = [0]
    after = assoc._after_message  # type: ignore[attr-defined]

    def counting() -> bool:
        turns[0] += 1
        return bool(after())

    assoc._after_message = counting  # type: ignore[attr-defined]
    return lambda: turns[0]


@pytest.mark.dcmtk
def test_association_thread_leaves_a_response_for_the_waiting_sender(storescp_port: int) -> None:
    assoc = _associate(SendingAE(ae_title="SCU"), storescp_port)
    try:
        turns = _count_turns(assoc)
        rsp = _store_response()
        # as when a response arrives while the association thread runs (not paused)
        assoc.dimse.msg_queue.put((1, rsp))
        start = turns()
        wait_for(lambda: turns() >= start + 5, timeout=20, what="five turns of the association thread")
        assert assoc.dimse.get_msg(block=False) == (1, rsp)
    finally:
        assoc.abort()


@pytest.mark.dcmtk
def test_association_thread_still_serves_a_request_from_the_peer(storescp_port: int) -> None:
    assoc = _associate(SendingAE(ae_title="SCU"), storescp_port)
    try:
        served: list[object] = []
        assoc._serve_request = lambda msg, cx: served.append(msg)  # type: ignore[method-assign]
        req = C_ECHO()
        req.MessageID = 7
        req.AffectedSOPClassUID = Verification
        assoc.dimse.msg_queue.put((1, req))
        wait_for(lambda: served == [req], timeout=20, what="the request served")
        assert assoc.dimse.msg_queue.empty()
    finally:
        assoc.abort()


@pytest.mark.dcmtk
def test_pynetdicom_own_requestor_thread_takes_responses(storescp_port: int) -> None:
    """Why SendingAE exists: remove it when this fails (pynetdicom fixed)."""
    assoc = _associate(AE(ae_title="SCU"), storescp_port)
    try:
        assoc.dimse.msg_queue.put((1, _store_response()))
        wait_for(assoc.dimse.msg_queue.empty, timeout=20, what="pynetdicom's thread taking the response")
    finally:
        assoc.abort()


@pytest.mark.dcmtk
def test_repeated_sends_of_large_instances_to_storescp_never_lose_a_response(
    tmp_path: Path, storescp_port: int
) -> None:
    files = write_series(tmp_path / "in", 100, rows=512, columns=512)
    peer = Peer("STORESCP", "127.0.0.1", storescp_port)
    for _ in range(8):
        results = send_files(files, peer, "SCU", timeout=10)
        assert [r.error for r in results if not r.ok] == []


@pytest.mark.parametrize("max_pdu", [0, 16384, 4096, 1000])
@pytest.mark.parametrize("rows", [0, 16, 64])
def test_store_request_is_encoded_byte_for_byte_as_pynetdicom_does(
    tmp_path: Path, max_pdu: int, rows: int
) -> None:
    [path] = write_series(tmp_path, 1, rows=rows, columns=rows)
    _, offset = split_dataset(path)
    ds = dcmread(path, stop_before_pixels=True)
    req = C_STORE()
    req.MessageID = 513
    req.AffectedSOPClassUID = ds.SOPClassUID
    req.AffectedSOPInstanceUID = ds.SOPInstanceUID
    req.Priority = 2
    req._dataset_path = (path, offset)  # type: ignore[attr-defined]
    theirs = C_STORE_RQ()
    theirs.primitive_to_message(req)
    expected = [p.presentation_data_value_list for p in theirs.encode_msg(5, max_pdu)]
    ours = store_request_pdus(req, 5, max_pdu)
    assert ours is not None
    assert [p.presentation_data_value_list for p in ours] == expected
