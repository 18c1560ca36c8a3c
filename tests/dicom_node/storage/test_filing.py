"""Spool: durable writes under UID paths, refusals that leave nothing behind, start-up repair."""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_node.errors import InvalidUIDError, OutOfResourcesError, StorageError
from dicom_node.storage.digest import digest_of
from dicom_node.storage.filing import Spool
from dicom_node.storage.header import InstanceHeader
from dicom_node.storage.ingest import Ingestor, Origin
from dicom_node.storage.journal import Journal
from tests.support.instances import dataset_bytes, make_ct, send_datasets
from tests.support.scp import running_node
from tests.support.small_disk import run_on_small_tmpfs

REPO = Path(__file__).resolve().parents[3]


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def uids() -> tuple[str, str, str]:
    return generate_uid(), generate_uid(), generate_uid()


def test_store_writes_file_under_uid_path(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "store", fsync=True)
    study, series, sop = uids()
    stored = spool.store([b"head", memoryview(b"-body")], study, series, sop)
    assert stored.relpath == f"spool/{study}/{series}/{sop}.dcm"
    assert stored.size == 9
    assert (tmp_path / "store" / stored.relpath).read_bytes() == b"head-body"
    assert list(spool.tmp_dir.iterdir()) == []


def test_store_from_file_object_copies_from_its_position(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "store", fsync=False)
    src = tmp_path / "src.bin"
    src.write_bytes(b"SKIP" + os.urandom(300_000))
    study, series, sop = uids()
    with src.open("rb") as fp:
        fp.seek(4)
        stored = spool.store([b"meta", fp], study, series, sop)
    assert (spool.storage_dir / stored.relpath).read_bytes() == b"meta" + src.read_bytes()[4:]
    # a stream without a file descriptor is copied too
    stored = spool.store([io.BytesIO(b"abc")], study, series, sop)
    assert (spool.storage_dir / stored.relpath).read_bytes() == b"abc"


def test_same_instance_replaces_the_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=True)
    study, series, sop = uids()
    spool.store(b"first", study, series, sop)
    stored = spool.store(b"second version", study, series, sop)
    files = [p for p in all_files(spool.root) if p.suffix == ".dcm"]
    assert files == [tmp_path / stored.relpath]
    assert files[0].read_bytes() == b"second version"


@pytest.mark.parametrize(
    "bad",
    ["..", "1.2/../../x", "1." + "2" * 70, "1.2\x003", "", "1..2", "/etc", "1.2\\3", "1.2 "],
)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_invalid_uid_writes_nothing(tmp_path: Path, bad: str, position: int) -> None:
    storage = tmp_path / "storage"
    spool = Spool(storage)
    before = all_files(tmp_path)
    parts = list(uids())
    parts[position] = bad
    with pytest.raises(InvalidUIDError):
        spool.store(b"data", *parts)
    assert all_files(tmp_path) == before


def test_free_space_reserve_refuses_and_writes_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=1 << 62)  # more than any disk has
    with pytest.raises(OutOfResourcesError, match="below the reserve"):
        spool.store(b"x" * 1000, *uids())
    assert all_files(spool.root) == set()


def test_reserve_counts_the_instance_size(tmp_path: Path) -> None:
    probe = Spool(tmp_path)
    free = probe.free_bytes()
    reserve = free - 1_000_000  # a small instance fits, one larger than the margin does not
    spool = Spool(tmp_path, min_free_bytes=reserve)
    spool.store(b"x" * 1000, *uids())
    with pytest.raises(OutOfResourcesError):
        spool.store(b"x" * 50_000_000, *uids())
    assert len([p for p in all_files(spool.root) if p.suffix == ".dcm"]) == 1
    assert list(spool.tmp_dir.iterdir()) == []


_FULL_DISK_PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from dicom_node.errors import OutOfResourcesError
    from dicom_node.storage.filing import Spool
    spool = Spool(Path(sys.argv[1]), fsync=True)
    ok = spool.store(b"a" * 100_000, "1.2", "1.2.3", "1.2.3.4")
    try:
        spool.store(b"b" * 400_000, "1.2", "1.2.3", "1.2.3.5")
        outcome = "stored"
    except OutOfResourcesError as exc:
        outcome = "refused: " + str(exc)
    files = sorted(str(p.relative_to(spool.root)) for p in spool.root.rglob("*") if p.is_file())
    print(json.dumps({"outcome": outcome, "files": files, "first": ok.relpath}))
    """
)


def test_disk_full_while_writing_removes_the_temp_file(tmp_path: Path) -> None:
    """A real ENOSPC: a 256 KiB tmpfs mounted in a private user+mount namespace."""
    result = run_on_small_tmpfs(tmp_path, "256k", _FULL_DISK_PROBE)
    assert result["outcome"].startswith("refused: no space left"), result
    # the first instance is intact, the second left neither a final file nor a temp file
    assert result["files"] == ["1.2/1.2.3/1.2.3.4.dcm"], result


def test_symlink_planted_in_spool_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    spool = Spool(tmp_path / "storage")
    study, series, sop = uids()
    (spool.root / study).symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="outside the spool"):
        spool.store(b"data", study, series, sop)
    assert all_files(outside) == set()
    assert list(spool.tmp_dir.iterdir()) == []


def test_remove_only_inside_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "storage")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    with pytest.raises(StorageError):
        spool.remove("spool/../../victim.txt")
    assert victim.exists()
    stored = spool.store(b"x", *uids())
    assert spool.remove(stored.relpath) is True
    assert spool.remove(stored.relpath) is False


def _encoded(header: InstanceHeader, tmp: Path) -> bytes:
    ds = make_ct(
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        sop_uid=header.sop_instance_uid,
        ImagesInAcquisition=header.expected_count,
    )
    path = tmp / f"{header.sop_instance_uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return dataset_bytes(path)


def _ingest(storage: Path, journal: Journal, header: InstanceHeader, tmp: Path, aid: str) -> str:
    ingestor = Ingestor(Spool(storage), journal)
    data = _encoded(header, tmp)
    stored = ingestor.ingest(header, "1.2.840.10008.1.2.1", data, Origin("NNUNET", "MODALITY", aid))
    return stored.relpath


def test_reconcile_records_unjournaled_files_and_cleans_temp(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    study, series = generate_uid(), generate_uid()
    headers = [
        InstanceHeader("1.2.840.10008.5.1.4.1.1.2", generate_uid(), study, series, "CT", "chest", 3)
        for _ in range(3)
    ]
    first = Journal(storage / "journal.sqlite")
    paths = [_ingest(storage, first, h, tmp_path, "assoc-1") for h in headers]
    first.close()
    # a journal that lost its last transactions: it knows only the first instance
    (storage / "journal.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (storage / f"journal.sqlite{suffix}").unlink(missing_ok=True)
    journal = Journal(storage / "journal.sqlite")
    _ingest(storage, journal, headers[0], tmp_path, "assoc-2")
    spool = Spool(storage)
    (spool.tmp_dir / "dead.part").write_bytes(b"half")

    stats = spool.reconcile(journal)

    assert stats == {"tmp_removed": 1, "recorded": 2, "unreadable": 0}
    assert list(spool.tmp_dir.iterdir()) == []
    rows = journal.instances_of_series(series)
    assert sorted(r.path for r in rows) == sorted(paths)
    recovered = [r for r in rows if r.sop_instance_uid != headers[0].sop_instance_uid]
    assert {(r.called_ae, r.calling_ae) for r in recovered} == {("NNUNET", "MODALITY")}
    assert journal.get_series(series).instance_count == 3
    # idempotent
    assert spool.reconcile(journal)["recorded"] == 0


def test_reconcile_logs_unreadable_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    journal = Journal(tmp_path / "journal.sqlite")
    bad = spool.root / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not dicom at all")
    stats = spool.reconcile(journal)
    assert stats["unreadable"] == 1
    assert bad.exists()
    events = journal.recent_events(level="error")
    assert events and events[0].kind == "reconcile_failed"


def test_the_data_set_digest_is_taken_while_writing_and_skips_the_file_meta(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "store", fsync=False)
    body = os.urandom(200_000)
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    expected = digest_of(body)
    with src.open("rb") as fp:
        from_file = spool.store([b"meta one", fp], *uids(), hashed_from=1)
    from_buffers = spool.store([b"meta two", body[:5], memoryview(body[5:])], *uids(), hashed_from=1)
    assert from_file.digest == from_buffers.digest == expected
    assert spool.store([b"meta", body], *uids()).digest is None  # not asked


def test_reconciliation_rebuilds_the_row_the_receiver_wrote(tmp_path: Path) -> None:
    """Both read the header with the same reader: an Images in Acquisition written "3.0" (seen
    from modalities) is 3 for both, not 3 for one and unknown for the other."""
    storage = tmp_path / "storage"
    ds = make_ct(Modality="CT", SeriesDescription="chest")
    ds.add_new(0x00201002, "IS", "3.0")
    with running_node(storage) as node:
        (rsp,) = send_datasets(node.port, [ds])
        assert rsp is not None and rsp.Status == 0
        (received,) = node.journal.instances_of_series(ds.SeriesInstanceUID)
        received_series = node.journal.get_series(ds.SeriesInstanceUID)
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        (storage / name).unlink(missing_ok=True)
    journal = Journal(storage / "journal.sqlite")
    assert Spool(storage).reconcile(journal)["recorded"] == 1
    (rebuilt,) = journal.instances_of_series(ds.SeriesInstanceUID)
    rebuilt_series = journal.get_series(ds.SeriesInstanceUID)
    journal.close()
    fields = ["sop_instance_uid", "sop_class_uid", "study_uid", "path", "size", "transfer_syntax"]
    assert {f: getattr(rebuilt, f) for f in [*fields, "called_ae", "calling_ae"]} == {
        f: getattr(received, f) for f in [*fields, "called_ae", "calling_ae"]
    }
    assert received_series is not None and rebuilt_series is not None
    series_fields = ["modality", "series_description", "expected_count"]
    assert {f: getattr(rebuilt_series, f) for f in series_fields} == {
        f: getattr(received_series, f) for f in series_fields
    }
    assert received_series.expected_count == 3
    # the same data set digest: a re-send after the rebuild is recognised as unchanged
    assert rebuilt.digest == received.digest and rebuilt.digest is not None


def test_a_study_folder_removed_while_a_store_makes_its_series_folder_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention removes empty study folders; a store of another series of that study may be making
    its series folder at that moment (the series locks are per series)."""
    spool = Spool(tmp_path / "storage", fsync=True)
    study, series, sop = uids()
    (spool.root / study).mkdir()  # the study folder exists when the store looks
    mkdir = os.mkdir
    removed = []

    def mkdir_after_a_purge(path: os.PathLike[str] | str, *args: object) -> None:
        if Path(path).name == series and not removed:
            (spool.root / study).rmdir()  # retention, between the look and the mkdir
            removed.append(path)
        mkdir(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", mkdir_after_a_purge)
    stored = spool.store(b"data set", study, series, sop)
    assert removed
    assert (spool.storage_dir / stored.relpath).read_bytes() == b"data set"
