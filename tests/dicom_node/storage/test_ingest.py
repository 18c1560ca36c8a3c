"""Ingest: file meta written for the spool, journal row, replaced copies, wake-ups."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, generate_uid
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from dicom_node.storage.filing import Spool
from dicom_node.storage.header import InstanceHeader
from dicom_node.storage.ingest import Ingestor, Origin, encode_file_meta
from dicom_node.storage.journal import Journal
from tests.support.instances import dataset_bytes, make_ct


def encode_file_meta_pydicom(header: InstanceHeader, transfer_syntax: str, origin: Origin) -> bytes:
    """The file meta of a spool file as pydicom writes it: the oracle for the node's own encoder."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(header.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(header.sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    meta.SourceApplicationEntityTitle = origin.called_ae
    meta.SendingApplicationEntityTitle = origin.calling_ae
    meta.ReceivingApplicationEntityTitle = origin.called_ae
    buf = DicomBytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    "origin",
    [Origin("NNUNET", "STORESCU"), Origin("A", "ODD AE"), Origin("ABCDEFGHIJKLMNOP", "X", "id")],
)
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.1.99"])
def test_file_meta_is_what_pydicom_writes(origin: Origin, syntax: str) -> None:
    header = InstanceHeader("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2", "1.2.3")
    assert encode_file_meta(header, syntax, origin) == encode_file_meta_pydicom(header, syntax, origin)


def _ct(tmp_path: Path, **kwargs: object) -> tuple[InstanceHeader, bytes]:
    ds = make_ct(**kwargs)  # type: ignore[arg-type]
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    header = InstanceHeader(
        ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, "CT"
    )
    return header, dataset_bytes(path)


def test_ingest_writes_a_readable_part10_file_and_a_row(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    woke: list[str] = []
    ingestor = Ingestor(Spool(tmp_path), journal, clock=lambda: 1234.5, on_instance=woke.append)
    header, data = _ct(tmp_path)
    stored = ingestor.ingest(
        header, "1.2.840.10008.1.2.1", [data[:10], memoryview(data)[10:]], Origin("NN", "MOD", "a1")
    )
    ds = dcmread(tmp_path / stored.relpath)
    assert ds.SOPInstanceUID == header.sop_instance_uid
    assert ds.file_meta.SendingApplicationEntityTitle == "MOD"
    assert dataset_bytes(tmp_path / stored.relpath) == data
    (row,) = journal.instances_of_series(header.series_uid)
    assert (row.path, row.size, row.received_at, row.association_id) == (
        stored.relpath,
        stored.size,
        1234.5,
        "a1",
    )
    assert woke == [header.series_uid]


def test_instance_moved_to_another_series_leaves_one_file(tmp_path: Path) -> None:
    ingestor = Ingestor(Spool(tmp_path), Journal(tmp_path / "j.sqlite"))
    sop = generate_uid()
    first, data1 = _ct(tmp_path, sop_uid=sop)
    second, data2 = _ct(tmp_path, sop_uid=sop)
    a = ingestor.ingest(first, "1.2.840.10008.1.2.1", data1, Origin("NN", "MOD"))
    b = ingestor.ingest(second, "1.2.840.10008.1.2.1", data2, Origin("NN", "MOD"))
    assert a.relpath != b.relpath
    assert not (tmp_path / a.relpath).exists() and (tmp_path / b.relpath).exists()


def test_a_failing_wake_up_does_not_fail_the_instance(tmp_path: Path) -> None:
    def broken(series_uid: str) -> None:
        raise RuntimeError("completion loop gone")

    ingestor = Ingestor(Spool(tmp_path), Journal(tmp_path / "j.sqlite"), on_instance=broken)
    header, data = _ct(tmp_path)
    stored = ingestor.ingest(header, "1.2.840.10008.1.2.1", data, Origin("NN", "MOD"))
    assert (tmp_path / stored.relpath).exists()
