"""A spool temp file written piece by piece (the receive fast path's): filed with the hash of exactly
its data set, its header read from memory or, past the kept prefix, from the file, and nothing left
behind when it is dropped."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.errors import InvalidUIDError
from dicom_node.net.store_sink import checked_header
from dicom_node.storage.digest import digest_of
from dicom_node.storage.filing import Spool
from dicom_node.storage.incoming import PREFIX_BYTES
from tests.support.instances import dataset_bytes, make_ct

HEAD = b"\x00" * 128 + b"DICM" + b"our file meta"


def pieces(data: bytes, size: int) -> list[memoryview]:
    view = memoryview(data)
    return [view[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("fsync", [True, False])
def test_a_data_set_written_in_pieces_is_filed_whole_with_the_digest_of_the_data_set(
    tmp_path: Path, fsync: bool
) -> None:
    spool = Spool(tmp_path / "storage", fsync=fsync)
    body = os.urandom(700_000)  # more than the kept prefix
    incoming = spool.open_incoming(HEAD)
    for piece in pieces(body, 65_000):
        incoming.write(piece)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    stored = incoming.commit(study, series, sop)
    assert (spool.storage_dir / stored.relpath).read_bytes() == HEAD + body
    assert stored.digest == digest_of(body)
    assert stored.size == len(HEAD) + len(body)
    assert list(spool.tmp_dir.iterdir()) == []


def test_a_header_longer_than_the_kept_prefix_is_read_from_the_file(tmp_path: Path) -> None:
    """The UIDs come after a long private element, beyond what is kept in memory."""
    ds = make_ct(Modality="CT")
    ds.add_new(0x00090010, "LO", "BIG PRIVATE")
    ds.add_new(0x00091001, "OB", b"\x01" * (PREFIX_BYTES + 5000))
    ds.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    body = dataset_bytes(tmp_path / "big.dcm")
    spool = Spool(tmp_path / "storage", fsync=False)
    incoming = spool.open_incoming(HEAD)
    for piece in pieces(body, 10_000):
        incoming.write(piece)
    header = checked_header(
        incoming.dataset_reader(),
        ExplicitVRLittleEndian,
        spool.max_dataset_bytes,
        context_class=ds.SOPClassUID,
        command_class=ds.SOPClassUID,
        command_instance=ds.SOPInstanceUID,
    )
    incoming.discard()
    assert header.study_uid == ds.StudyInstanceUID
    assert header.series_uid == ds.SeriesInstanceUID


def test_the_data_set_reader_reads_as_a_file_would(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "storage", fsync=False)
    body = os.urandom(PREFIX_BYTES * 2 + 123)
    incoming = spool.open_incoming(HEAD)
    for piece in pieces(body, 40_000):
        incoming.write(piece)
    reader = incoming.dataset_reader()
    expected = io.BytesIO(HEAD + body)
    expected.seek(len(HEAD))
    got = []
    for size in (10, PREFIX_BYTES - 20, 50, -1, 5):  # within, across and past the prefix, to the end
        got.append((reader.read(size), expected.read(size), reader.tell(), expected.tell()))
    assert reader.seek(-7, io.SEEK_END) == expected.seek(-7, io.SEEK_END)
    got.append((reader.read(), expected.read(), reader.tell(), expected.tell()))
    incoming.discard()
    for mine, theirs, my_pos, their_pos in got:
        assert (mine, my_pos) == (theirs, their_pos)


def test_a_dropped_file_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "storage")
    incoming = spool.open_incoming(HEAD)
    incoming.write(os.urandom(3_000_000))
    incoming.discard()
    assert list(spool.tmp_dir.iterdir()) == []


def test_a_commit_under_an_invalid_uid_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "storage")
    incoming = spool.open_incoming(HEAD)
    incoming.write(b"data set")
    with pytest.raises(InvalidUIDError):
        incoming.commit(generate_uid(), "../../etc", generate_uid())
    assert list(spool.tmp_dir.iterdir()) == []
    assert [p for p in spool.root.iterdir() if p.name != ".tmp"] == []
