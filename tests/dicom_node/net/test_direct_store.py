"""The receive fast path's P-DATA reader (dicom_node.net.direct_store) on real associations: C-STORE data
sets go from the socket into the spool without pynetdicom's message assembly; everything else still
reaches pynetdicom; broken or abandoned messages leave nothing behind and the node goes on serving."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicom_node.net import command_set as cs
from dicom_node.net import dimse_status as st
from dicom_node.net.receive import Receiver
from tests.support.instances import dataset_bytes, make_ct
from tests.support.scp import Node, running_node
from tests.support.tools import dcmtk, peer_env, wait_for


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running_node(tmp_path / "storage") as n:
        yield n


def _p_data(context_id: int, control: int, payload: bytes) -> bytes:
    pdv = (len(payload) + 2).to_bytes(4, "big") + bytes([context_id, control]) + payload
    return b"\x04\x00" + len(pdv).to_bytes(4, "big") + pdv


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"fast": 0, "pynetdicom": 0}
    begin, handle = Receiver.begin_store, Receiver.handle_store

    def counted_begin(self: Receiver, *args: Any) -> Any:
        calls["fast"] += 1
        return begin(self, *args)

    def counted_handle(self: Receiver, *args: Any) -> Any:
        calls["pynetdicom"] += 1
        return handle(self, *args)

    monkeypatch.setattr(Receiver, "begin_store", counted_begin)
    monkeypatch.setattr(Receiver, "handle_store", counted_handle)
    return calls


@pytest.mark.dcmtk
@pytest.mark.parametrize("max_send_pdu", [4096, 65536])
def test_storescu_instances_go_straight_to_the_spool_byte_for_byte(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_send_pdu: int
) -> None:
    calls = _count_calls(monkeypatch)
    sent = []
    for k in range(3):
        path = tmp_path / f"ct{k}.dcm"
        make_ct(rows=200, columns=200).save_as(path, enforce_file_format=True)
        sent.append(path)
    result = subprocess.run(
        [
            dcmtk("storescu"),
            "--max-send-pdu",
            str(max_send_pdu),
            "-aec",
            "NNUNET",
            "127.0.0.1",
            str(node.port),
            *map(str, sent),
        ],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert calls == {"fast": 3, "pynetdicom": 0}
    assert sorted(dataset_bytes(p) for p in node.spool_files()) == sorted(dataset_bytes(p) for p in sent)
    assert node.journal.counts().instances == 3
    assert list((node.storage / "spool" / ".tmp").iterdir()) == []


def test_echo_and_store_alternate_on_one_association(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """C-ECHO goes to pynetdicom, C-STORE to the fast path; each answers its own message."""
    calls = _count_calls(monkeypatch)
    ae = AE(ae_title="MIXED")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
    assert assoc.is_established
    try:
        for _ in range(3):
            assert assoc.send_c_echo().Status == st.SUCCESS
            assert assoc.send_c_store(make_ct()).Status == st.SUCCESS
    finally:
        assoc.release()
    assert calls == {"fast": 3, "pynetdicom": 0}
    assert node.journal.counts().instances == 3


def _raw_association(node: Node) -> tuple[Any, int]:
    ae = AE(ae_title="RAWSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
    assert assoc.is_established
    return assoc, assoc.accepted_contexts[0].context_id


def test_a_pdv_longer_than_its_pdu_aborts_only_that_association(node: Node) -> None:
    assoc, context_id = _raw_association(node)
    ds = make_ct()
    command = cs.store_request(1, str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    sock = assoc.dul.socket.socket
    sock.sendall(_p_data(context_id, 0x03, command))
    pdv = (5000).to_bytes(4, "big") + bytes([context_id, 0x02]) + b"\0" * 100  # claims 5000 bytes
    sock.sendall(b"\x04\x00" + len(pdv).to_bytes(4, "big") + pdv)
    wait_for(lambda: assoc.is_aborted or not assoc.is_alive(), timeout=30, what="the abort")
    assert node.spool_files() == []
    assert list((node.storage / "spool" / ".tmp").iterdir()) == []
    good, _ = _raw_association(node)
    try:
        assert good.send_c_store(make_ct()).Status == st.SUCCESS
    finally:
        good.release()


def test_a_command_inside_a_data_set_drops_the_unfinished_instance(node: Node) -> None:
    """A peer that starts a new message before the last fragment of a data set: the unfinished
    instance is never filed; the new message is served."""
    assoc, context_id = _raw_association(node)
    try:
        first, second = make_ct(), make_ct()
        sock = assoc.dul.socket.socket
        command = cs.store_request(1, str(first.SOPClassUID), str(first.SOPInstanceUID))
        sock.sendall(_p_data(context_id, 0x03, command))
        sock.sendall(_p_data(context_id, 0x00, b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"))
        assert assoc.send_c_store(second).Status == st.SUCCESS
    finally:
        assoc.release()
    [stored] = node.spool_files()
    assert stored.name == f"{second.SOPInstanceUID}.dcm"
    assert list((node.storage / "spool" / ".tmp").iterdir()) == []


@pytest.mark.parametrize("path", ["fast path", "pynetdicom"])
def test_a_store_on_another_classes_context_is_refused(
    node: Node, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A C-STORE-RQ of a CT sent on the Verification context (PS3.7: the command's SOP class is the
    context's): refused with 0x0122, nothing filed, the association goes on."""
    if path == "pynetdicom":
        assert node.server._server is not None
        monkeypatch.setattr(node.server._server, "store_target", None)
    ae = AE(ae_title="WRONGCX")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
    assert assoc.is_established
    verification = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == Verification)
    ds = make_ct()
    path_ = Path(node.storage) / "ct.dcm"
    ds.save_as(path_, enforce_file_format=True)
    sock = assoc.dul.socket.socket
    assoc._reactor_checkpoint.clear()  # keep pynetdicom's requestor thread off the answer
    try:
        wait_for(lambda: assoc._is_paused, timeout=10, what="the requestor thread to pause")
        sock.sendall(
            _p_data(verification, 0x03, cs.store_request(7, str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
        )
        sock.sendall(_p_data(verification, 0x02, dataset_bytes(path_)))
        _, rsp = assoc.dimse.get_msg(block=True)
        assert rsp is not None and rsp.Status == 0x0122
        assert rsp.ErrorComment
        assoc._reactor_checkpoint.set()
        assert assoc.send_c_store(make_ct()).Status == st.SUCCESS
    finally:
        assoc._reactor_checkpoint.set()
        if assoc.is_established:
            assoc.release()
    [stored] = node.spool_files()
    assert stored.name != f"{ds.SOPInstanceUID}.dcm"
    assert list((node.storage / "spool" / ".tmp").iterdir()) == []


def test_a_command_and_its_data_set_in_one_pdu_are_filed_byte_for_byte(node: Node) -> None:
    """Several PDV items in one P-DATA-TF (the command and three data fragments of uneven sizes,
    as PS3.8 allows): each item is found inside the buffered reads and the data set is filed whole."""
    ae = AE(ae_title="ONEPDU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET", max_pdu=0)
    assert assoc.is_established
    (context,) = assoc.accepted_contexts
    ds = make_ct(rows=64, columns=64)
    source = Path(node.storage) / "ct.dcm"
    ds.save_as(source, enforce_file_format=True)
    data = dataset_bytes(source)
    cut = [0, 7, len(data) // 3, len(data)]
    items = [(0x03, cs.store_request(5, str(ds.SOPClassUID), str(ds.SOPInstanceUID)))]
    items += [(0x02 if end == len(data) else 0x00, data[start:end]) for start, end in itertools.pairwise(cut)]
    body = b"".join(
        (len(value) + 2).to_bytes(4, "big") + bytes([context.context_id, control]) + value
        for control, value in items
    )
    sock = assoc.dul.socket.socket
    assoc._reactor_checkpoint.clear()  # keep pynetdicom's requestor thread off the answer
    try:
        wait_for(lambda: assoc._is_paused, timeout=10, what="the requestor thread to pause")
        sock.sendall(b"\x04\x00" + len(body).to_bytes(4, "big") + body)
        _, rsp = assoc.dimse.get_msg(block=True)
        assert rsp is not None and rsp.Status == st.SUCCESS
    finally:
        assoc._reactor_checkpoint.set()
        if assoc.is_established:
            assoc.release()
    [stored] = node.spool_files()
    assert stored.name == f"{ds.SOPInstanceUID}.dcm"
    assert dataset_bytes(stored) == data


def _store_raw(node: Node, command_uid: str, ds: Any) -> tuple[int, Any]:
    """Send a C-STORE-RQ naming ``command_uid`` with ``ds``'s data set; (status, association)."""
    ae = AE(ae_title="RAWSTORE")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
    assert assoc.is_established
    (context,) = assoc.accepted_contexts
    source = Path(node.storage) / f"{command_uid}.src"
    ds.save_as(source, enforce_file_format=True)
    data = dataset_bytes(source)
    sock = assoc.dul.socket.socket
    assoc._reactor_checkpoint.clear()  # keep pynetdicom's requestor thread off the answer
    try:
        wait_for(lambda: assoc._is_paused, timeout=10, what="the requestor thread to pause")
        sock.sendall(_p_data(context.context_id, 0x03, cs.store_request(3, str(ds.SOPClassUID), command_uid)))
        for start in range(0, len(data), 16_000):
            last = start + 16_000 >= len(data)
            sock.sendall(_p_data(context.context_id, 0x02 if last else 0x00, data[start : start + 16_000]))
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert rsp is not None
    return int(rsp.Status), assoc


def test_a_large_data_set_of_another_instance_is_refused_once_it_has_arrived(node: Node) -> None:
    """The header of a large data set is checked while the rest arrives; a mismatch is answered
    (0xA900) only after the last fragment, and the association goes on."""
    ds = make_ct(rows=256, columns=256)
    status, assoc = _store_raw(node, generate_uid(), ds)
    try:
        assert status == 0xA900
        assert assoc.send_c_store(make_ct()).Status == st.SUCCESS
    finally:
        assoc.release()
    [stored] = node.spool_files()
    assert stored.name != f"{ds.SOPInstanceUID}.dcm"
    assert list((node.storage / "spool" / ".tmp").iterdir()) == []


def test_a_header_that_goes_on_past_the_first_fragments_is_read_whole(node: Node) -> None:
    """Images in Acquisition follows an element longer than what is checked early: the early check
    must not take the end of what has arrived for the end of the header."""
    ds = make_ct(rows=256, columns=256)
    ds.add_new(0x00200500, "UN", b"\x01" * 100_000)  # an unknown element inside group 0020
    ds.add_new(0x00201002, "IS", "3")
    status, assoc = _store_raw(node, ds.SOPInstanceUID, ds)
    assoc.release()
    assert status == st.SUCCESS
    [stored] = node.spool_files()
    assert stored.parent.name == ds.SeriesInstanceUID
    series = node.journal.get_series(ds.SeriesInstanceUID)
    assert series is not None and series.expected_count == 3
    assert dataset_bytes(stored) == dataset_bytes(Path(node.storage) / f"{ds.SOPInstanceUID}.src")
