"""Our SCU: peers parsed strictly, files sent raw in their own syntax, contexts only as needed."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AllStoragePresentationContexts

from dicom_node.errors import DeliveryError
from dicom_node.net.peers import Peer
from dicom_node.net.scu import MAX_CONTEXTS, echo, iter_files, send_files
from tests.support.instances import dataset_bytes, dcmtk_storescp, make_ct, write_series
from tests.support.scp import Node, running_node
from tests.support.tools import free_port


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running_node(tmp_path / "storage") as n:
        yield n


def test_iter_files_recurses_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".git").mkdir()
    for rel in ["x.dcm", "a/y.dcm", "a/b/z", "a/.hidden", "a/.git/obj"]:
        (tmp_path / rel).write_bytes(b"")
    single = tmp_path / "x.dcm"
    found = iter_files([tmp_path / "a", single])
    assert found == [tmp_path / "a" / "b" / "z", tmp_path / "a" / "y.dcm", single]


@pytest.mark.dcmtk
def test_echo_and_send_to_dcmtk_storescp_bit_preserving(tmp_path: Path) -> None:
    series = write_series(tmp_path / "in", 3)
    rle = tmp_path / "in" / "rle.dcm"
    rle.write_bytes(Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes())
    out = tmp_path / "out"
    with dcmtk_storescp(out, "+B", "+xa") as port:
        peer = Peer("STORESCP", "127.0.0.1", port)
        assert echo(peer, "SCU", timeout=10) == 0
        results = send_files([*series, rle], peer, "SCU")
    assert [(r.path, r.status) for r in results] == [(p, 0) for p in [*series, rle]]
    assert all(r.ok for r in results)
    received = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in out.iterdir()}
    assert len(received) == 4
    for src in [*series, rle]:
        ds = dcmread(src, stop_before_pixels=True)
        got = received[ds.SOPInstanceUID]
        # storescp +B writes the data set exactly as it came off the wire
        assert dataset_bytes(got) == dataset_bytes(src)
        assert (
            dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID
            == ds.file_meta.TransferSyntaxUID
        )


def test_echo_failures_say_why(node: Node) -> None:
    with pytest.raises(
        DeliveryError, match=r"rejected: Rejected Permanent by Service User: Called AE title not recognised"
    ):
        echo(Peer("NOTTHERE", "127.0.0.1", node.port), "SCU", timeout=10)
    closed = Peer("NNUNET", "127.0.0.1", free_port())
    with pytest.raises(
        DeliveryError, match=re.escape(f"C-ECHO to {closed}: connection refused by 127.0.0.1:")
    ):
        echo(closed, "SCU", timeout=5)
    nowhere = Peer("NNUNET", "no-such-host.invalid", 104)
    with pytest.raises(DeliveryError, match=re.escape("cannot resolve host 'no-such-host.invalid'")):
        echo(nowhere, "SCU", timeout=5)


def test_unreadable_files_are_reported_and_the_rest_sent(node: Node, tmp_path: Path) -> None:
    good = write_series(tmp_path / "in", 2)
    junk = tmp_path / "in" / "junk.txt"
    junk.write_text("hello")
    missing = tmp_path / "in" / "gone.dcm"
    results = send_files([good[0], junk, missing, good[1]], Peer("NNUNET", "127.0.0.1", node.port), "SCU")
    assert [r.path for r in results] == [good[0], junk, missing, good[1]]
    assert [r.status for r in results] == [0, None, None, 0]
    assert results[1].skipped and results[1].error == "skipped: not a DICOM file"
    assert "cannot read" in results[2].error
    assert len(node.spool_files()) == 2


def test_more_than_128_context_pairs_use_several_associations(tmp_path: Path) -> None:
    """130 (SOP class, transfer syntax) pairs: 65 storage classes x 2 syntaxes -> two associations,
    each proposing only the pairs its files need."""
    classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts][:65]
    study, series = generate_uid(), generate_uid()
    paths = []
    for i, sop_class in enumerate(classes):
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            ds = make_ct(study_uid=study, series_uid=series, rows=2, columns=2, transfer_syntax=syntax)
            ds.SOPClassUID = sop_class
            ds.file_meta.MediaStorageSOPClassUID = sop_class
            path = tmp_path / f"{i:03d}-{syntax}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    assert (
        len({(str(dcmread(p).SOPClassUID), str(dcmread(p).file_meta.TransferSyntaxUID)) for p in paths})
        == 130
        > MAX_CONTEXTS
    )

    with running_node(tmp_path / "storage", fsync=False) as node:
        results = send_files(paths, Peer("NNUNET", "127.0.0.1", node.port), "SCU")
        rows = node.journal.instances_of_series(series)

    assert [r.status for r in results] == [0] * 130
    assert len(rows) == 130
    assert len({r.association_id for r in rows}) == 2
    assert {r.transfer_syntax for r in rows} == {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def test_associations_have_nagle_off(node: Node) -> None:
    """A C-STORE's last PDU goes out in its own send; with Nagle on, each small C-STORE would wait
    ~40 ms for the peer's delayed ACK."""
    from dicom_node.net.store_scu import connect

    with connect(Peer("NNUNET", "127.0.0.1", node.port), timeout=10) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.dcmtk
def test_a_file_the_peer_takes_only_uncompressed_is_transcoded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rle = tmp_path / "rle.dcm"
    rle.write_bytes(Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes())
    out = tmp_path / "out"
    with dcmtk_storescp(out) as port:  # default storescp: uncompressed syntaxes only
        [result] = send_files([rle], Peer("STORESCP", "127.0.0.1", port), "SCU")
    assert result.ok, result
    [got] = list(out.iterdir())
    stored, source = dcmread(got), dcmread(rle)
    assert not stored.file_meta.TransferSyntaxUID.is_compressed
    assert stored.SOPInstanceUID == source.SOPInstanceUID  # the same instance, in another syntax
    assert (stored.pixel_array == source.pixel_array).all()
    assert "transcoded" in caplog.text and "RLE Lossless" in caplog.text


def test_no_accepted_context_names_the_sop_class_and_syntaxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynetdicom import AE, _config

    # a restricted peer (our own SCP, built earlier in this process, switched pynetdicom to accept all)
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)
    scp = AE(ae_title="CTONLY")
    scp.add_supported_context("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage only
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        rle = tmp_path / "rle.dcm"
        rle.write_bytes(Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes())
        [result] = send_files([rle], Peer("CTONLY", "127.0.0.1", port), "SCU")
    finally:
        server.shutdown()
    assert result.status is None
    assert "the peer accepted no presentation context" in result.error
    assert "MR Image Storage (1.2.840.10008.5.1.4.1.1.4) in RLE Lossless" in result.error


def test_several_associations_at_once_send_every_file_and_report_in_order(node: Node, tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 7)
    seen: list[Path] = []
    results = send_files(
        files,
        Peer("NNUNET", "127.0.0.1", node.port),
        "SCU",
        associations=3,
        on_result=lambda r: seen.append(r.path),
    )
    assert [(r.path, r.status) for r in results] == [(p, 0) for p in files]
    assert sorted(seen) == sorted(files)
    assert len(node.spool_files()) == 7
    assert len({r.association_id for r in node.journal.instances_of_series(node.instances[0])}) == 3
