"""The SCP against real peers: dcmtk echoscu/storescu and pynetdicom senders on free ports."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.status import code_to_category

from dicom_node.net import dimse_status as st
from dicom_node.net.peers import Peer
from dicom_node.net.scu import send_files
from tests.support.instances import (
    dataset_bytes,
    echo,
    make_ct,
    raw_associate,
    recv_pdu,
    send_datasets,
    uid_checks_relaxed,
    write_series,
)
from tests.support.scp import Node, running_node, start_node
from tests.support.tools import dcmtk, peer_env, wait_for


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running_node(tmp_path / "storage") as n:
        yield n


def storescu(
    port: int, files: list[Path], *options: str, called: str = "NNUNET", calling: str = "STORESCU"
) -> subprocess.CompletedProcess[str]:
    args = [dcmtk("storescu"), "-aet", calling, "-aec", called, *options, "127.0.0.1", str(port)]
    return subprocess.run(
        [*args, *map(str, files)], env=peer_env(), capture_output=True, text=True, timeout=120
    )


def echoscu(port: int, called: str = "NNUNET", calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("echoscu"), "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


# ------------------------------------------------------------------------------- echo and store


@pytest.mark.dcmtk
@pytest.mark.parametrize("called", ["NNUNET", "SECOND"])
def test_dcmtk_echo_on_each_called_ae(node: Node, called: str) -> None:
    proc = echoscu(node.port, called=called)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.dcmtk
def test_dcmtk_storescu_files_are_filed_byte_for_byte(node: Node, tmp_path: Path) -> None:
    sent = write_series(tmp_path / "in", 3, ImagesInAcquisition=3)
    proc = storescu(node.port, sent, "-xe")  # explicit VR LE: the files' own syntax
    assert proc.returncode == 0, proc.stderr

    files = node.spool_files()
    assert len(files) == 3
    by_sop = {dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}
    for path in sent:
        ds = dcmread(path, stop_before_pixels=True)
        stored = by_sop[ds.SOPInstanceUID]
        assert (
            stored
            == node.storage
            / "spool"
            / ds.StudyInstanceUID
            / ds.SeriesInstanceUID
            / f"{ds.SOPInstanceUID}.dcm"
        )
        assert dataset_bytes(stored) == dataset_bytes(path)
        meta = dcmread(stored, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert (meta.SendingApplicationEntityTitle, meta.ReceivingApplicationEntityTitle) == (
            "STORESCU",
            "NNUNET",
        )

    series_uid = dcmread(sent[0], stop_before_pixels=True).SeriesInstanceUID
    rows = node.journal.instances_of_series(series_uid)
    assert len(rows) == 3
    assert {r.calling_ae for r in rows} == {"STORESCU"}
    assert {r.path for r in rows} == {f.relative_to(node.storage).as_posix() for f in files}
    series = node.journal.get_series(series_uid)
    assert series.instance_count == 3 and series.expected_count == 3
    assert series.modality == "CT" and series.series_description == "receiver test"
    assert node.instances == [series_uid] * 3
    # the release wakes the completion loop with the association that delivered the series
    wait_for(lambda: node.released, timeout=10, what="on_released")
    assert node.released == [rows[0].association_id]
    assert series.last_association_id == rows[0].association_id


def test_duplicate_instance_replaces_file_and_row(node: Node) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = make_ct(study_uid=study, series_uid=series, sop_uid=sop, seed=1)
    second = make_ct(study_uid=study, series_uid=series, sop_uid=sop, seed=2)
    statuses = send_datasets(node.port, [first, second])
    assert [s.Status for s in statuses] == [0, 0]
    files = node.spool_files()
    assert len(files) == 1
    assert dcmread(files[0]).PixelData == second.PixelData
    assert len(node.journal.instances_of_series(series)) == 1
    # the same SOP instance later filed under another series: the old copy goes
    moved = make_ct(study_uid=study, series_uid=generate_uid(), sop_uid=sop, seed=3)
    assert send_datasets(node.port, [moved])[0].Status == 0
    files = node.spool_files()
    assert len(files) == 1 and moved.SeriesInstanceUID in str(files[0])
    assert node.journal.counts().instances == 1


# (id, source: a pydicom test file or a dcmtk encoder run on a small CT, storescu option, syntax);
# storescu cannot propose JPEG lossless process 14 (.57) without a config file
COMPRESSED = [
    ("rle", "MR_small_RLE.dcm", "-xr", "1.2.840.10008.1.2.5"),
    ("j2k", "JPEG2000.dcm", "-xw", "1.2.840.10008.1.2.4.91"),
    ("j2k_lossless", "MR_small_jp2klossless.dcm", "-xv", "1.2.840.10008.1.2.4.90"),
    ("jls_lossless", "MR_small_jpeg_ls_lossless.dcm", "-xt", "1.2.840.10008.1.2.4.80"),
    ("jls_near", "dcmcjpls +en", "-xu", "1.2.840.10008.1.2.4.81"),
    ("jpeg_baseline", "SC_rgb_jpeg_dcmtk.dcm", "-xy", "1.2.840.10008.1.2.4.50"),
    ("jpeg_extended", "JPEG-lossy.dcm", "-xx", "1.2.840.10008.1.2.4.51"),
    ("jpeg_lossless_sv1", "dcmcjpeg +e1", "-xs", "1.2.840.10008.1.2.4.70"),
    ("jpeg_lossless_14", "dcmcjpeg +el", None, "1.2.840.10008.1.2.4.57"),
    ("deflated", "image_dfl.dcm", "-xd", "1.2.840.10008.1.2.1.99"),
    ("big_endian", "MR_small_bigendian.dcm", "-xb", "1.2.840.10008.1.2.2"),
    ("implicit", "dcmconv +ti", "-xi", "1.2.840.10008.1.2"),
    ("htj2k_lossless", "htj2k", None, "1.2.840.10008.1.2.4.201"),
]
IDS = [c[0] for c in COMPRESSED]


def source_file(spec: str, tmp_path: Path) -> Path:
    if spec.endswith(".dcm"):
        return Path(get_testdata_file(spec))
    if spec == "htj2k":  # no encoder here; the node never decodes, so a stand-in codestream will do
        ds = make_ct(rows=8, columns=8, transfer_syntax="1.2.840.10008.1.2.4.201")
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 stand-in HTJ2K codestream"])
        ds["PixelData"].VR = "OB"
        path = tmp_path / "htj2k.dcm"
        ds.save_as(path, enforce_file_format=True)
        return path
    tool, option = spec.split()
    plain = tmp_path / "plain.dcm"
    make_ct(rows=32, columns=32, PixelRepresentation=0).save_as(plain, enforce_file_format=True)
    out = tmp_path / "encoded.dcm"
    subprocess.run([dcmtk(tool), option, str(plain), str(out)], check=True, capture_output=True)
    return out


def _same_elements(sent: Path, stored: Path) -> None:
    a, b = dcmread(sent), dcmread(stored)
    for elem in a:
        if elem.tag == 0xFFFCFFFC:  # trailing padding: dcmtk does not send it
            continue
        assert elem.tag in b, f"{elem.tag} missing"
        assert b[elem.tag].value == elem.value, f"{elem.tag} differs"
    assert set(b.keys()) <= set(a.keys())


# storescu has no option proposing JPEG lossless process 14 or HTJ2K: those go through our raw
# sender only (test_raw_sent_syntaxes_are_stored_byte_for_byte)
DCMTK_SENDABLE = [c for c in COMPRESSED if c[2] is not None]


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("name", "spec", "option", "syntax"), DCMTK_SENDABLE, ids=[c[0] for c in DCMTK_SENDABLE]
)
def test_dcmtk_sent_syntaxes_are_stored_as_sent(
    node: Node, tmp_path: Path, name: str, spec: str, option: str, syntax: str
) -> None:
    """dcmtk re-encodes what it sends (sequence lengths, padding), so the stored data set is compared
    element by element, compressed pixel data included."""
    source = source_file(spec, tmp_path)
    assert dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    proc = storescu(node.port, [source], option)
    assert proc.returncode == 0, proc.stderr
    (stored,) = node.spool_files()
    assert dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    _same_elements(source, stored)
    (row,) = node.journal.instances_of_series(dcmread(source, stop_before_pixels=True).SeriesInstanceUID)
    assert row.transfer_syntax == syntax


@pytest.mark.parametrize(("name", "spec", "option", "syntax"), COMPRESSED, ids=IDS)
def test_raw_sent_syntaxes_are_stored_byte_for_byte(
    node: Node, tmp_path: Path, name: str, spec: str, option: str | None, syntax: str
) -> None:
    """Our sender puts the file's data set bytes on the wire as they are: the spool file holds them."""
    source = source_file(spec, tmp_path)
    ((_, status, error),) = send_files([source], Peer("NNUNET", "127.0.0.1", node.port), "SCU")
    assert status == 0, error
    (stored,) = node.spool_files()
    assert dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    assert dataset_bytes(stored) == dataset_bytes(source)


# ------------------------------------------------------------------------------- rejections


def _associate_result(port: int, called: str, calling: str) -> tuple[int, int, int] | None:
    """(result, source, diagnostic) of a rejected association; None if it was accepted."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if assoc.is_established:
        assoc.release()
        return None
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    return int(rj.result), int(rj.result_source), int(rj.diagnostic)


@pytest.mark.dcmtk
def test_wrong_called_ae_is_rejected_with_reason_7(node: Node) -> None:
    assert _associate_result(node.port, "SOMEONEELSE", "ANY") == (0x01, 0x01, 0x07)
    proc = echoscu(node.port, called="SOMEONEELSE")
    assert proc.returncode != 0
    assert "Called AE Title Not Recognized" in proc.stderr
    assert echo(node.port) == 0
    events = node.journal.recent_events(level="warning")
    rejected = [e.message for e in events if e.kind == "association_rejected"]
    # the journal says why in pynetdicom's words, not as bare codes
    assert rejected and all("SOMEONEELSE" in m and "Called AE title not recognised" in m for m in rejected)


@pytest.mark.dcmtk
def test_calling_ae_outside_the_allow_list_is_rejected_with_reason_3(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage", allowed_calling_aes=["MODALITY", "ECHOTEST"]) as node:
        assert _associate_result(node.port, "NNUNET", "STRANGER") == (0x01, 0x01, 0x03)
        proc = echoscu(node.port, calling="STRANGER")
        assert proc.returncode != 0 and "Calling AE Title Not Recognized" in proc.stderr
        assert _associate_result(node.port, "NNUNET", "MODALITY") is None
        assert echo(node.port) == 0


def _files_outside(root: Path, allowed: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_relative_to(allowed)]


BAD_UIDS = {
    "dotdot": {"sop_uid": ".."},
    "traversal": {"sop_uid": "1.2/../../x"},
    "nul": {"sop_uid": "1.2\x003"},
    "too_long_study": {"study_uid": "1." + "2" * 70},
    "traversal_series": {"series_uid": "../../../../tmp/evil"},
    "empty_series": {"series_uid": ""},
}


@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")  # pydicom, building the bad datasets
@pytest.mark.parametrize("bad", BAD_UIDS.values(), ids=list(BAD_UIDS))
def test_bad_uids_fail_and_write_nothing(node: Node, tmp_path: Path, bad: dict[str, str]) -> None:
    ds = make_ct(**bad)
    if bad.get("series_uid") == "":
        del ds.SeriesInstanceUID
    before = set(tmp_path.rglob("*"))
    with uid_checks_relaxed():
        (rsp,) = send_datasets(node.port, [ds])
    status = int(rsp.Status)
    assert 0xC000 <= status <= 0xC0FF, hex(status)
    assert "ErrorComment" in rsp
    assert node.spool_files() == []
    assert list((node.storage / "spool" / ".tmp").iterdir()) == []
    new = set(tmp_path.rglob("*")) - before
    assert all(p.is_relative_to(node.storage) for p in new), new
    assert _files_outside(tmp_path, node.storage) == []
    assert node.journal.counts().instances == 0
    assert node.journal.recent_events(level="warning")[0].kind == "store_rejected"
    assert echo(node.port) == 0


def test_dataset_not_matching_the_command_gets_a900(node: Node, tmp_path: Path) -> None:
    ds = make_ct()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # the command will carry this UID
    ds.preamble = b"\x00" * 128
    path = tmp_path / "mismatch.dcm"
    ds.save_as(path, enforce_file_format=False)  # keeps the meta as set
    ((_, status, _),) = send_files([path], Peer("NNUNET", "127.0.0.1", node.port), calling_ae="SCU")
    assert status == st.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert node.spool_files() == []


def test_free_space_reserve_answers_a700_and_writes_nothing(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage", min_free_disk_mb=1 << 40) as node:  # an exabyte reserve
        (rsp,) = send_datasets(node.port, [make_ct()])
        assert rsp.Status == st.OUT_OF_RESOURCES
        assert node.spool_files() == []
        assert list((node.storage / "spool" / ".tmp").iterdir()) == []
        assert node.journal.counts().instances == 0
        assert node.journal.recent_events(level="error")[0].kind == "store_refused"


# ------------------------------------------------------------------------------- PDU guard


def test_oversized_pdu_is_refused_before_its_body(node: Node) -> None:
    sock = raw_associate(node.port)
    try:
        # a P-DATA-TF header announcing 64 MiB; the body is never sent
        sock.sendall(b"\x04\x00" + (64 * 1024 * 1024).to_bytes(4, "big"))
        pdu_type, body = recv_pdu(sock)
        assert pdu_type == 0x07, "expected an A-ABORT"
        assert body[2:4] == b"\x02\x06"  # service provider, invalid PDU parameter value
        assert recv_pdu(sock)[0] == 0  # then the node closes the connection
    finally:
        sock.close()
    assert echo(node.port) == 0
    (event,) = [e for e in node.journal.recent_events(level="warning") if e.kind == "pdu_refused"]
    assert str(64 * 1024 * 1024) in event.message


def test_oversized_pdu_body_is_not_buffered(node: Node) -> None:
    """A sender that streams the 64 MiB body anyway is cut off after what the socket buffers hold."""
    sock = raw_associate(node.port)
    sent = 0
    chunk = b"\x00" * (1024 * 1024)
    try:
        sock.sendall(b"\x04\x00" + (64 * 1024 * 1024).to_bytes(4, "big"))
        with pytest.raises(OSError):  # broken pipe / connection reset once the node has closed
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
    finally:
        sock.close()
    assert sent < 32 * 1024 * 1024
    assert echo(node.port) == 0


def test_pdu_within_the_limit_is_served(node: Node) -> None:
    """The guard follows the framing across PDUs: a C-ECHO over a raw association works."""
    sock = raw_associate(node.port)
    try:
        # C-ECHO-RQ command (implicit VR LE) in one P-DATA-TF PDU, context 1, last command fragment
        command = _echo_rq_command()
        pdv = (len(command) + 2).to_bytes(4, "big") + b"\x01\x03" + command
        sock.sendall(b"\x04\x00" + len(pdv).to_bytes(4, "big") + pdv)
        pdu_type, body = recv_pdu(sock)
        assert pdu_type == 0x04  # P-DATA-TF with the C-ECHO-RSP
        # (0000,0900) Status, implicit VR LE: tag, length 2, value 0x0000
        assert body.endswith(b"\x00\x00\x00\x09\x02\x00\x00\x00\x00\x00")
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
        assert recv_pdu(sock)[0] == 0x06
    finally:
        sock.close()


def _echo_rq_command() -> bytes:
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    cmd = Dataset()
    cmd.AffectedSOPClassUID = "1.2.840.10008.1.1"
    cmd.CommandField = 0x0030
    cmd.MessageID = 1
    cmd.CommandDataSetType = 0x0101
    body = encode(cmd, True, True)
    assert body is not None
    group_length = Dataset()
    group_length.CommandGroupLength = len(body)
    head = encode(group_length, True, True)
    assert head is not None
    return head + body


def test_connection_closed_mid_header_is_harmless(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage", acse_timeout_seconds=1) as node:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
            sock.sendall(b"\x01\x00\x00")
        assert echo(node.port) == 0


# ------------------------------------------------------------------------------- faults and limits


def test_filing_fault_answers_out_of_resources_not_cannot_understand(node: Node) -> None:
    """A real I/O fault (the spool's temp folder replaced by a file, so no temp file can be made) is
    the node's problem, not the data's: 0xA7xx tells the sender to retry, as pynetdicom's storescp does."""
    tmp_dir = node.storage / "spool" / ".tmp"
    tmp_dir.rmdir()
    tmp_dir.write_text("in the way")
    (rsp,) = send_datasets(node.port, [make_ct()])
    assert code_to_category(rsp.Status) == "Failure" and 0xA700 <= rsp.Status <= 0xA7FF, hex(rsp.Status)
    assert "cannot write" in rsp.ErrorComment
    assert node.spool_files() == []
    assert node.journal.counts().instances == 0
    event = node.journal.recent_events(level="error")[0]
    assert event.kind == "store_failed" and f"0x{rsp.Status:04X}" in event.message
    assert echo(node.port) == 0


def test_journal_commit_failure_answers_out_of_resources(node: Node) -> None:
    """The journal refuses the insert (a real SQLite error, raised by a trigger planted from another
    connection): the sender is told to retry (0xA7xx); the filed copy waits for reconciliation."""
    with sqlite3.connect(node.storage / "journal.sqlite") as other:
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON instances BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    (rsp,) = send_datasets(node.port, [make_ct()])
    assert 0xA700 <= rsp.Status <= 0xA7FF, hex(rsp.Status)
    assert node.journal.counts().instances == 0
    event = node.journal.recent_events(level="error")[0]
    assert event.kind == "store_failed" and "refused" in event.message
    assert echo(node.port) == 0


def test_peer_abort_is_journaled_with_its_source(node: Node) -> None:
    ae = AE(ae_title="ABORTER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
    assert assoc.is_established
    assoc.abort()

    def aborted() -> list[str]:
        events = node.journal.recent_events(level="warning")
        return [e.message for e in events if e.kind == "association_aborted"]

    wait_for(lambda: bool(aborted()), timeout=10, what="the abort in the journal")
    (message,) = aborted()
    assert "ABORTER" in message and "DUL service-user" in message


def test_association_limit(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage", max_associations=1) as node:
        ae = AE(ae_title="FIRST")
        ae.add_requested_context(Verification)
        first = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
        assert first.is_established
        try:
            # transient, service provider (presentation), local limit exceeded
            assert _associate_result(node.port, "NNUNET", "SECOND") == (0x02, 0x03, 0x02)
            refused = [e for e in node.journal.recent_events(level="warning") if e.kind == "pdu_refused"]
            assert len(refused) == 1 and "association limit reached" in refused[0].message
            assert "127.0.0.1" in refused[0].message
        finally:
            first.release()
        wait_for(lambda: echo(node.port) == 0, timeout=10, what="a free association slot")


def test_idle_connection_is_closed_after_the_acse_timeout(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage", acse_timeout_seconds=0.5) as node:
        with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
            assert sock.recv(100) == b""  # closed by the node, long before our 30 s timeout
        assert echo(node.port) == 0


def test_stop_aborts_open_associations_and_stops_listening(tmp_path: Path) -> None:
    node = start_node(tmp_path / "storage")
    port = node.port
    ae = AE(ae_title="LINGER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="NNUNET")
    assert assoc.is_established
    node.server.stop(grace_seconds=0.2)
    wait_for(lambda: not assoc.is_established, timeout=10, what="association ended")
    assert assoc.is_aborted
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    node.journal.close()
