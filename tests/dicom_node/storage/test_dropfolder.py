"""Drop folder: files copied or moved in are filed like received instances; junk is set aside."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicom_node.storage.dropfolder import DropFolder
from dicom_node.storage.filing import Spool
from dicom_node.storage.ingest import Ingestor
from dicom_node.storage.journal import Journal
from tests.support.instances import dataset_bytes, make_ct, write_series
from tests.support.tools import wait_for


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


def make_drop(
    storage: Path, journal: Journal, *, max_dataset_bytes: int = 2 << 30, **options: object
) -> DropFolder:
    ingestor = Ingestor(Spool(storage, fsync=False, max_dataset_bytes=max_dataset_bytes), journal)
    params: dict[str, object] = {"called_ae": "NNUNET", "poll_seconds": 0.05, "rescan_seconds": 0.3}
    params.update(options)
    return DropFolder(storage / "incoming", ingestor, **params)  # type: ignore[arg-type]


@pytest.fixture
def drop(storage: Path, journal: Journal) -> Iterator[DropFolder]:
    d = make_drop(storage, journal).start()
    yield d
    d.stop()


def spool_files(storage: Path) -> list[Path]:
    return sorted((storage / "spool").rglob("*.dcm"))


# watchdog's recursive inotify watch warns when nested folders appear at once (it re-adds a watch)
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_copied_files_are_filed_journaled_and_removed(
    drop: DropFolder, storage: Path, journal: Journal, tmp_path: Path
) -> None:
    sources = write_series(tmp_path / "src", 3)
    sub = drop.incoming / "study" / "series"
    sub.mkdir(parents=True)
    shutil.copy(sources[0], drop.incoming / "a.dcm")
    for src in sources[1:]:
        shutil.copy(src, sub / src.name)  # files in sub-folders count too

    # the journal row is written after the spool file: wait for the rows
    wait_for(lambda: journal.counts().instances == 3, timeout=20, what="three journaled instances")
    wait_for(
        lambda: not any(p.is_file() for p in drop.incoming.rglob("*")), timeout=10, what="sources removed"
    )
    series_uid = dcmread(sources[0], stop_before_pixels=True).SeriesInstanceUID
    rows = journal.instances_of_series(series_uid)
    assert len(rows) == 3
    assert {(r.called_ae, r.calling_ae, r.association_id) for r in rows} == {("NNUNET", "DROPFOLDER", None)}
    stored = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in spool_files(storage)}
    for src in sources:
        assert dataset_bytes(stored[dcmread(src, stop_before_pixels=True).SOPInstanceUID]) == dataset_bytes(
            src
        )


def test_moved_in_compressed_file_is_filed(
    drop: DropFolder, storage: Path, journal: Journal, tmp_path: Path
) -> None:
    staged = tmp_path / "staged.dcm"
    shutil.copy(get_testdata_file("MR_small_RLE.dcm"), staged)
    os.replace(staged, drop.incoming / "moved.dcm")
    wait_for(lambda: journal.counts().instances == 1, timeout=20, what="journaled instance")
    (stored,) = spool_files(storage)
    assert dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"


@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")  # pydicom, writing the bad UID
def test_garbage_goes_to_rejected_with_a_reason(drop: DropFolder, storage: Path, journal: Journal) -> None:
    (drop.incoming / "notes.txt").write_text("not DICOM at all\n")
    bad_uid = make_ct(sop_uid="1.2.3")
    bad_uid.StudyInstanceUID = "1.2.3/../../../x"
    sub = drop.incoming / "sub"
    sub.mkdir()
    bad_uid.save_as(sub / "bad.dcm", enforce_file_format=True)

    # the journal event is the last step of a rejection: wait for both events
    wait_for(
        lambda: [e.kind for e in journal.recent_events(level="warning")].count("dropfolder_rejected") == 2,
        timeout=20,
        what="two rejections",
    )
    assert "not a DICOM Part 10 file" in (drop.rejected / "notes.txt.reason.txt").read_text()
    assert (drop.rejected / "notes.txt").read_text() == "not DICOM at all\n"
    assert "invalid Study Instance UID" in (drop.rejected / "sub" / "bad.dcm.reason.txt").read_text()
    assert not (drop.incoming / "notes.txt").exists()
    assert spool_files(storage) == []
    assert journal.counts().instances == 0
    # the rejected folder itself is never ingested again
    drop.scan()
    assert (drop.rejected / "notes.txt").exists()


def test_files_present_at_start_are_filed(storage: Path, journal: Journal, tmp_path: Path) -> None:
    incoming = storage / "incoming"
    incoming.mkdir(parents=True)
    paths = write_series(incoming / "old", 2)
    past = time.time() - 3600
    for p in paths:
        os.utime(p, (past, past))
    (incoming / ".hidden.dcm").write_bytes(paths[0].read_bytes())  # hidden: left alone
    os.utime(incoming / ".hidden.dcm", (past, past))
    drop = make_drop(storage, journal, watch=False)
    assert drop.scan() == 2
    assert len(spool_files(storage)) == 2
    assert (incoming / ".hidden.dcm").exists()


def test_without_events_a_file_is_taken_once_its_size_is_stable(
    storage: Path, journal: Journal, tmp_path: Path
) -> None:
    """The polling fallback: no watchdog; a file written in two steps is only taken when complete."""
    drop = make_drop(storage, journal, watch=False, poll_seconds=0.5, rescan_seconds=0.1).start()
    try:
        (src,) = write_series(tmp_path / "src", 1)
        data = src.read_bytes()
        target = drop.incoming / "slow.dcm"
        with target.open("wb") as fp:
            fp.write(data[:200])
            fp.flush()
            # half a file is not DICOM: had it been taken now it would be rejected
            wait_for(lambda: drop.is_pending(target), timeout=10, interval=0.01, what="file noticed")
            fp.write(data[200:])
        wait_for(lambda: journal.counts().instances == 1, timeout=20, what="filed instance")
        assert not drop.rejected.exists() or not any(drop.rejected.iterdir())
    finally:
        drop.stop()


def test_links_are_never_followed_for_reading_or_writing(
    storage: Path, journal: Journal, tmp_path: Path
) -> None:
    """A link to a DICOM file outside is not ingested (the link is moved aside, its target stays);
    a planted ``.reason.txt`` link and a linked folder under ``rejected`` write nothing outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.dcm"
    make_ct(sop_uid="1.2.3.4").save_as(secret, enforce_file_format=True)
    victim = outside / "victim.txt"
    victim.write_text("keep me\n")
    trap_dir = outside / "trap"
    trap_dir.mkdir()
    drop = make_drop(storage, journal)
    drop.rejected.mkdir(parents=True, exist_ok=True)
    (drop.rejected / "garbage.txt.reason.txt").symlink_to(victim)
    (drop.rejected / "sub").symlink_to(trap_dir)
    (drop.incoming / "link.dcm").symlink_to(secret)
    (drop.incoming / "garbage.txt").write_text("not DICOM\n")
    (drop.incoming / "sub").mkdir()
    (drop.incoming / "sub" / "more.txt").write_text("not DICOM either\n")
    assert not drop.ingest_file(drop.incoming / "link.dcm")
    assert not drop.ingest_file(drop.incoming / "garbage.txt")
    assert not drop.ingest_file(drop.incoming / "sub" / "more.txt")

    assert journal.counts().instances == 0 and spool_files(storage) == []
    assert (drop.rejected / "link.dcm").is_symlink() and secret.is_file()
    assert "symbolic link" in (drop.rejected / "link.dcm.reason.txt").read_text()
    assert victim.read_text() == "keep me\n"
    assert (drop.rejected / "garbage.txt").read_text() == "not DICOM\n"
    assert list(trap_dir.iterdir()) == []
    assert (drop.incoming / "sub" / "more.txt").exists()  # kept where it was, reported
    kinds = [e.kind for e in journal.recent_events()]
    assert kinds.count("dropfolder_rejected") == 2 and "dropfolder_failed" in kinds


def test_a_large_file_is_rejected_from_its_header_without_reading_it_whole(
    storage: Path, journal: Journal, tmp_path: Path
) -> None:
    """A 64 MiB file that is not DICOM: rejected after reading its first bytes only."""
    import tracemalloc

    drop = make_drop(storage, journal)
    big = drop.incoming / "big.bin"
    big.parent.mkdir(parents=True, exist_ok=True)
    with big.open("wb") as fp:
        fp.truncate(64 << 20)
    tracemalloc.start()
    try:
        assert not drop.ingest_file(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert "not a DICOM Part 10 file" in (drop.rejected / "big.bin.reason.txt").read_text()


def test_the_configured_data_set_limit_is_what_refuses_a_deflate_bomb(
    storage: Path, journal: Journal, tmp_path: Path
) -> None:
    """A deflated instance inflating to 48 MiB: rejected (with the reason) by a drop folder whose
    spool allows 32 MiB, filed by one with the default limit."""
    from tests.support.deflate_bomb import write_deflate_bomb

    template = tmp_path / "ct.dcm"
    make_ct().save_as(template, enforce_file_format=True)
    strict = make_drop(storage, journal, max_dataset_bytes=32 << 20)
    bomb = write_deflate_bomb(template, strict.incoming / "bomb.dcm", 48 << 20)
    assert not strict.ingest_file(bomb)
    assert "inflates to more than 33554432 bytes" in (strict.rejected / "bomb.dcm.reason.txt").read_text()
    assert journal.counts().instances == 0
    lenient = make_drop(storage, journal)
    again = write_deflate_bomb(template, lenient.incoming / "again.dcm", 48 << 20)
    assert lenient.ingest_file(again)
    assert journal.counts().instances == 1
