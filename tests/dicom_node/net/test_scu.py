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
    closed = Peer("NNUNET", "127.0.0.1", 1)
    with pytest.raises(DeliveryError, match=re.escape("C-ECHO to NNUNET@127.0.0.1:1")):
        echo(closed, "SCU", timeout=5)


def test_unreadable_files_are_reported_and_the_rest_sent(node: Node, tmp_path: Path) -> None:
    good = write_series(tmp_path / "in", 2)
    junk = tmp_path / "in" / "junk.txt"
    junk.write_text("hello")
    missing = tmp_path / "in" / "gone.dcm"
    results = send_files([good[0], junk, missing, good[1]], Peer("NNUNET", "127.0.0.1", node.port), "SCU")
    assert [r.path for r in results] == [good[0], junk, missing, good[1]]
    assert [r.status for r in results] == [0, None, None, 0]
    assert "not a DICOM Part 10 file" in results[1].error
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
    """pynetdicom sends command and data set as separate PDUs; with Nagle on, each small C-STORE
    would wait ~40 ms for a delayed ACK."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from dicom_node.net.scu import _associate

    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    assoc = _associate(ae, Peer("NNUNET", "127.0.0.1", node.port)).assoc
    try:
        assert assoc.is_established
        assert assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()
