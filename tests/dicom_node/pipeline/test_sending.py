"""The sender: one association per destination batch, only the needed contexts, statuses recorded,
jittered exponential backoff while a destination is down, delivery once it is back."""

from __future__ import annotations

import itertools
import random
import socket
import threading
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SegmentationStorage,
    generate_uid,
)

from dicom_node.config import DestinationConfig, SendingSection
from dicom_node.pipeline.backoff import Backoff
from dicom_node.pipeline.sending import Sender
from dicom_node.storage.journal import DeliverySpec, JobSpec, Journal
from tests.support.journal_rows import instance_record
from tests.support.store_peers import RecordingSCP, dcmtk_storescp, stored_sop_uids
from tests.support.tools import free_port, wait_for


class MaxJitter(random.Random):
    """Always the longest wait the backoff allows (makes "not before" checks exact)."""

    def uniform(self, a: float, b: float) -> float:
        return b


def write_result(storage: Path, name: str, *, sop_class: str = SegmentationStorage) -> tuple[str, str]:
    """A small Part 10 file standing in for a result; returns (relative path, SOP Instance UID)."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SEG"
    ds.PatientID = "TEST"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rel = f"outputs/{name}.dcm"
    (storage / "outputs").mkdir(parents=True, exist_ok=True)
    ds.save_as(storage / rel, enforce_file_format=True)
    return rel, str(ds.SOPInstanceUID)


def queue_deliveries(journal: Journal, deliveries: list[DeliverySpec], *, now: float | None = None) -> None:
    """Put deliveries in the outbox the way the worker does (through a finished job)."""
    now = time.time() if now is None else now
    series = generate_uid()
    journal.record_instance(
        instance_record(generate_uid(), series, study=generate_uid(), path="spool/x.dcm", assoc=None, at=now)
    )
    journal.set_routing(series, rules=["r"])
    gen = journal.get_series(series).generation  # type: ignore[index]
    journal.create_jobs(
        series, generation=gen, jobs=[JobSpec("r", ["demo"], ["pacs"], {})], trigger="manual", now=now
    )
    job = journal.claim_job(now)
    assert job is not None
    journal.finish_job(job.id, state="done", now=now, deliveries=deliveries)


def make_sender(
    journal: Journal,
    storage: Path,
    port: int,
    *,
    initial: float = 0.2,
    maximum: float = 1.0,
    give_up_hours: float = 1.0,
    rng: random.Random | None = None,
    ae_title: str = "RECORDER",
) -> Sender:
    return Sender(
        journal,
        {"pacs": DestinationConfig(ae_title=ae_title, host="127.0.0.1", port=port, timeout_seconds=5)},
        storage_dir=storage,
        calling_ae="NNUNET",
        settings=SendingSection(
            backoff_initial_seconds=initial, backoff_max_seconds=maximum, give_up_after_hours=give_up_hours
        ),
        rng=rng or MaxJitter(),
        max_poll=0.5,
    )


def test_backoff_doubles_up_to_the_maximum_with_full_jitter() -> None:
    b = Backoff(2.0, 30.0, random.Random(1))
    assert [b.cap(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    delays = [b.delay(4) for _ in range(200)]
    assert all(0.0 <= d <= 16.0 for d in delays)
    assert min(delays) < 4.0 and max(delays) > 12.0  # spread over the whole range, not a fixed wait
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)


def test_batch_goes_over_one_association_with_only_the_needed_context(
    journal: Journal, tmp_path: Path
) -> None:
    files = [write_result(tmp_path, f"seg{i}") for i in range(3)]
    queue_deliveries(
        journal,
        [
            DeliverySpec(destination="pacs", path=p, sop_instance_uid=uid, sop_class_uid=SegmentationStorage)
            for p, uid in files
        ],
    )
    port = free_port()
    with RecordingSCP(port) as scp:
        sender = make_sender(journal, tmp_path, port)
        assert sender.send_due() is None  # nothing left
        assert scp.associations == 1
        assert scp.requested[0] == [(SegmentationStorage, [ExplicitVRLittleEndian])]  # only what is needed
        assert sorted(str(ds.SOPInstanceUID) for ds in scp.received) == sorted(uid for _, uid in files)
    rows = journal.list_deliveries()
    assert {r.state for r in rows} == {"done"}
    assert {r.last_status for r in rows} == {0}
    assert all(r.attempts == 1 for r in rows)


def test_warning_status_counts_as_delivered_and_failure_is_retried(journal: Journal, tmp_path: Path) -> None:
    files = [write_result(tmp_path, f"seg{i}") for i in range(2)]
    queue_deliveries(
        journal,
        [
            DeliverySpec(destination="pacs", path=p, sop_instance_uid=uid, sop_class_uid=SegmentationStorage)
            for p, uid in files
        ],
    )
    port = free_port()
    with RecordingSCP(port, statuses=(0xB000, 0xA700, 0x0000)) as scp:
        sender = make_sender(journal, tmp_path, port, initial=0.2, maximum=0.2)
        next_at = sender.send_due()
        by_uid = {r.sop_instance_uid: r for r in journal.list_deliveries()}
        first, second = (by_uid[uid] for _, uid in files)
        assert (first.state, first.last_status) == ("done", 0xB000)
        assert (second.state, second.last_status) == ("pending", 0xA700)
        assert "out of resources" in (second.last_error or "").lower()  # pynetdicom's wording
        assert next_at is not None and next_at == pytest.approx(second.next_attempt_at)
        # not due yet: a pass now sends nothing
        sender.send_due()
        assert len(scp.received) == 2
        wait_for(lambda: time.time() >= second.next_attempt_at, timeout=5)
        sender.send_due()
        assert len(scp.received) == 3
    again = journal.list_deliveries(state="done")
    assert {r.sop_instance_uid for r in again} == {uid for _, uid in files}
    assert max(r.attempts for r in again) == 2


def test_destination_down_then_up_gets_its_results(journal: Journal, tmp_path: Path) -> None:
    """Nothing listens at first (connection refused); a dcmtk storescp starts later; the sender
    thread delivers with attempts > 1, each retry no earlier than the backoff allowed."""
    path, uid = write_result(tmp_path, "seg")
    queue_deliveries(
        journal,
        [
            DeliverySpec(
                destination="pacs", path=path, sop_instance_uid=uid, sop_class_uid=SegmentationStorage
            )
        ],
    )
    port = free_port()
    sender = make_sender(journal, tmp_path, port, initial=0.2, maximum=0.8, ae_title="STORESCP")
    sender.start()
    try:
        wait_for(lambda: journal.list_deliveries()[0].attempts >= 3, timeout=20, what="3 failed attempts")
        row = journal.list_deliveries()[0]
        assert row.state in ("pending", "sending")
        assert "connection refused" in (row.last_error or "")
        out = tmp_path / "received"
        with dcmtk_storescp(port, out):
            sender.wake()
            done = wait_for(
                lambda: next(iter(journal.list_deliveries(state="done")), None), timeout=20, what="delivery"
            )
            assert done.attempts >= 4  # three refused, then delivered
            assert stored_sop_uids(out) == [uid]
    finally:
        sender.stop()


def test_backoff_is_honoured_between_attempts(journal: Journal, tmp_path: Path) -> None:
    """A peer that accepts TCP and hangs up at once: every connection is an attempt. With the longest
    jitter the n-th retry comes no earlier than initial * 2**(n-1) (capped) after the failure."""
    path, uid = write_result(tmp_path, "seg")
    queue_deliveries(
        journal,
        [
            DeliverySpec(
                destination="pacs", path=path, sop_instance_uid=uid, sop_class_uid=SegmentationStorage
            )
        ],
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    connections: list[float] = []

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(time.time())
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    sender = make_sender(journal, tmp_path, port, initial=0.2, maximum=0.8)
    sender.start()
    try:
        wait_for(lambda: len(connections) >= 4, timeout=20, what="4 attempts")
    finally:
        sender.stop()
        listener.close()
    gaps = [b - a for a, b in itertools.pairwise(connections)]
    caps = [0.2, 0.4, 0.8]
    for gap, cap in zip(gaps, caps, strict=False):
        assert gap >= cap * 0.95, (gaps, caps)
    row = journal.list_deliveries()[0]
    assert row.state == "pending" and row.attempts >= 4
    assert "aborted" in row.last_error or "failed" in row.last_error


def test_gives_up_after_the_configured_age(journal: Journal, tmp_path: Path) -> None:
    path, uid = write_result(tmp_path, "seg")
    queue_deliveries(
        journal,
        [
            DeliverySpec(
                destination="pacs", path=path, sop_instance_uid=uid, sop_class_uid=SegmentationStorage
            )
        ],
        now=time.time() - 7200,
    )
    sender = make_sender(journal, tmp_path, free_port(), give_up_hours=1.0)
    sender.send_due()
    row = journal.list_deliveries()[0]
    assert row.state == "failed"
    assert row.last_error.startswith("gave up after 1 attempt(s)")
    assert "connection refused" in row.last_error
    events = journal.recent_events(level="error")
    assert events and events[0].kind == "delivery_failed" and uid in events[0].message


def test_missing_file_and_unknown_destination_fail_at_once(journal: Journal, tmp_path: Path) -> None:
    path, uid = write_result(tmp_path, "seg")
    queue_deliveries(
        journal,
        [
            DeliverySpec(
                destination="pacs",
                path="outputs/gone.dcm",
                sop_instance_uid=generate_uid(),
                sop_class_uid=SegmentationStorage,
            ),
            DeliverySpec(
                destination="elsewhere", path=path, sop_instance_uid=uid, sop_class_uid=SegmentationStorage
            ),
        ],
    )
    sender = make_sender(journal, tmp_path, free_port())
    assert sender.send_due() is None
    rows = {r.destination: r for r in journal.list_deliveries()}
    assert rows["pacs"].state == "failed" and "gone.dcm" in rows["pacs"].last_error
    assert rows["elsewhere"].state == "failed"
    assert "'elsewhere' is not configured" in rows["elsewhere"].last_error


def test_an_unexpected_error_for_one_destination_does_not_stop_the_others(
    journal: Journal, tmp_path: Path
) -> None:
    """A destination that cannot even be addressed (built past validation: what the config would
    refuse) fails its batch with the reason and is retried later; the other destination delivers."""
    bad_file, bad_uid = write_result(tmp_path, "bad")
    good_file, good_uid = write_result(tmp_path, "good")
    queue_deliveries(
        journal,
        [
            DeliverySpec("broken", bad_file, bad_uid, SegmentationStorage),
            DeliverySpec("pacs", good_file, good_uid, SegmentationStorage),
        ],
    )
    port = free_port()
    with RecordingSCP(port) as scp:
        sender = make_sender(journal, tmp_path, port)
        sender._destinations["broken"] = DestinationConfig.model_construct(
            ae_title="BROKEN", host="no such host!", port=104, calling_ae=None, timeout_seconds=5, tls=None
        )
        sender.send_due()
        assert [str(ds.SOPInstanceUID) for ds in scp.received] == [good_uid]
    rows = {r.destination: r for r in journal.list_deliveries()}
    assert rows["pacs"].state == "done"
    assert rows["broken"].state == "pending"  # retried later, not stuck in 'sending'
    assert rows["broken"].last_error is not None and "unexpected error" in rows["broken"].last_error
