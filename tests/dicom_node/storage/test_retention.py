"""Retention: expired series are purged (files, folders, outputs, rows, one event), younger or unfinished
ones kept; a crash during a purge and instances arriving during a purge lose nothing. The clock is
driven by the test, except through Node."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.config import config_from_mapping
from dicom_node.node import Node
from dicom_node.storage.filing import Spool
from dicom_node.storage.header import InstanceHeader
from dicom_node.storage.ingest import Ingestor, Origin
from dicom_node.storage.journal import DeliverySpec, EventRow, JobOutput, JobSpec, Journal
from dicom_node.storage.journal.retention import PurgeCounts, PurgePlan
from dicom_node.storage.retention import RetentionService
from dicom_node.storage.series_locks import SeriesLocks
from tests.support.filed_series import FiledSeries, write_instance
from tests.support.instances import dataset_bytes, make_ct, write_series
from tests.support.node_setup import storescu
from tests.support.tools import wait_for

DAY = 86400.0
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass
class Clock:
    now: float = field(default_factory=lambda: float(int(time.time())))

    def __call__(self) -> float:
        return self.now

    def advance(self, days: float) -> None:
        self.now += days * DAY


class Series(FiledSeries):
    @property
    def folder(self) -> Path:
        return self.storage / "spool" / self.study_uid / self.uid

    @property
    def outputs(self) -> Path:
        return self.storage / "outputs" / self.uid

    def unmatched(self) -> None:
        self.journal.set_routing(self.uid, rules=[], note="no rule matched")

    def queue_job(self, at: float) -> int:
        self.journal.set_routing(self.uid, rules=["ct"], quiet_seconds=5.0)
        row = self.journal.get_series(self.uid)
        assert row is not None
        [job_id] = self.journal.create_jobs(
            self.uid,
            generation=int(row.generation),
            jobs=[JobSpec("ct", ["demo"], ["pacs"], {})],
            trigger="quiet_period",
            now=at,
        )
        return job_id

    def run_job(self, at: float) -> int:
        """Claim the pending job, write its SEG output, finish it with one delivery to ``pacs``."""
        job = self.journal.claim_job(at)
        assert job is not None and job.series_uid == self.uid
        rel = f"outputs/{self.uid}/job-{job.id}/seg.dcm"
        write_instance(self.storage / rel, self.study_uid, generate_uid(), generate_uid())
        self.journal.finish_job(
            int(job.id),
            state="done",
            now=at,
            outputs=[JobOutput(rel, "seg")],
            deliveries=[
                DeliverySpec(destination="pacs", path=rel, sop_instance_uid="1.2.3", sop_class_uid=SEG)
            ],
        )
        return int(job.id)

    def deliver(self, at: float) -> None:
        for d in self.journal.claim_deliveries(at):
            self.journal.finish_delivery(int(d.id), ok=True, now=at, status=0)

    def rows(self) -> dict[str, int]:
        """How many rows of each table still name this series."""
        j = self.journal
        return {
            "series": int(j.get_series(self.uid) is not None),
            "instances": len(j.instances_of_series(self.uid)),
            "jobs": sum(x.series_uid == self.uid for x in j.list_jobs(1000)),
            "deliveries": sum(x.series_uid == self.uid for x in j.list_deliveries(1000)),
        }


def purged_events(journal: Journal, uid: str | None = None) -> list[EventRow]:
    return [
        e
        for e in journal.recent_events(1000)
        if e.kind == "retention_purged" and (uid is None or e.series_uid == uid)
    ]


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "var"
    (root / "spool").mkdir(parents=True)
    (root / "outputs").mkdir()
    return root


@pytest.fixture
def clock() -> Clock:
    return Clock()


def service(
    journal: Journal, storage: Path, clock: Clock, locks: SeriesLocks | None = None, **kw: Any
) -> RetentionService:
    return RetentionService(
        journal, storage_dir=storage, retention_days=7, clock=clock, locks=locks or SeriesLocks(), **kw
    )


# ---------------------------------------------------------------------- what is purged, what is kept


def test_unmatched_series_past_retention_is_purged(journal: Journal, storage: Path, clock: Clock) -> None:
    old = Series(storage, journal)
    old.add_many(clock.now, 3)
    old.unmatched()
    young = Series(storage, journal, study_uid=old.study_uid)  # same study, later series
    young.add(clock.now + 2 * DAY)
    young.unmatched()
    size = sum(int(i.size) for i in journal.instances_of_series(old.uid))
    clock.advance(7.5)

    report = service(journal, storage, clock).sweep()

    assert report.purged == [old.uid] and report.files == 3 and report.missing == 0
    assert report.bytes == size
    assert not old.folder.exists()
    assert young.folder.is_dir() and len(list(young.folder.iterdir())) == 1
    assert old.rows() == {"series": 0, "instances": 0, "jobs": 0, "deliveries": 0}
    assert young.rows()["instances"] == 1
    [event] = purged_events(journal)
    assert event.series_uid == old.uid and event.level == "info"
    assert "3 instance(s), 0 job(s), 0 delivery(ies)" in event.message
    assert "3 file(s) deleted" in event.message and "0 already missing" in event.message

    clock.advance(2)  # now the younger series is expired too: the study folder goes with it
    assert service(journal, storage, clock).sweep().purged == [young.uid]
    assert not (storage / "spool" / old.study_uid).exists()
    assert (storage / "spool").is_dir() and journal.counts().instances == 0


def test_younger_series_is_kept(journal: Journal, storage: Path, clock: Clock) -> None:
    s = Series(storage, journal)
    rel = s.add(clock.now)
    s.unmatched()
    clock.advance(6.9)
    report = service(journal, storage, clock).sweep()
    assert report.purged == [] and report.kept == {}
    assert (storage / rel).is_file() and s.rows()["instances"] == 1
    assert purged_events(journal) == []


def test_last_activity_counts_job_and_delivery_ends(journal: Journal, storage: Path, clock: Clock) -> None:
    s = Series(storage, journal)
    t0 = clock.now
    s.add(t0)
    s.queue_job(t0)
    s.run_job(t0 + 1 * DAY)
    s.deliver(t0 + 3 * DAY)  # the last activity
    clock.now = t0 + 9 * DAY  # past last_received and job end + 7 days, not past the delivery's
    assert service(journal, storage, clock).sweep().purged == []
    assert s.rows()["deliveries"] == 1
    clock.now = t0 + 10 * DAY + 1
    assert service(journal, storage, clock).sweep().purged == [s.uid]


@pytest.mark.parametrize("unfinished", ["pending job", "running job", "pending delivery", "sending delivery"])
def test_unfinished_work_keeps_an_expired_series(
    journal: Journal, storage: Path, clock: Clock, unfinished: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = Series(storage, journal)
    rels = s.add_many(clock.now, 2)
    s.queue_job(clock.now)
    if unfinished != "pending job":
        job = journal.claim_job(clock.now)
        assert job is not None
    if "delivery" in unfinished:
        journal.finish_job(
            int(job.id),
            state="done",
            now=clock.now,
            deliveries=[
                DeliverySpec(destination="pacs", path="x", sop_instance_uid="1.2", sop_class_uid=SEG)
            ],
        )
    if unfinished == "sending delivery":
        assert journal.claim_deliveries(clock.now)
    clock.advance(30)

    with caplog.at_level(logging.WARNING, logger="dicom_node.storage.retention"):
        report = service(journal, storage, clock).sweep()

    assert report.purged == [] and unfinished.split()[1] in report.kept[s.uid]
    assert all((storage / r).is_file() for r in rels) and s.rows()["instances"] == 2
    assert any(s.uid in r.getMessage() and "kept" in r.getMessage() for r in caplog.records)
    assert purged_events(journal) == []


def test_series_still_receiving_is_kept(journal: Journal, storage: Path, clock: Clock) -> None:
    unrouted = Series(storage, journal)
    unrouted.add(clock.now)
    quiet = Series(storage, journal)  # a rule with a quiet period longer than the retention
    quiet.add(clock.now)
    journal.set_routing(quiet.uid, rules=["ct"], quiet_seconds=30 * DAY)
    clock.advance(8)
    report = service(journal, storage, clock).sweep()
    assert report.purged == []
    assert "still receiving" in report.kept[unrouted.uid]
    assert "still receiving" in report.kept[quiet.uid]


def test_processed_series_is_purged_with_its_outputs(journal: Journal, storage: Path, clock: Clock) -> None:
    s = Series(storage, journal)
    s.add_many(clock.now, 2)
    s.queue_job(clock.now)
    job_id = s.run_job(clock.now + 60)
    s.deliver(clock.now + 90)
    assert (s.outputs / f"job-{job_id}" / "seg.dcm").is_file()
    other = Series(storage, journal)  # a younger processed series keeps its outputs
    other.add(clock.now + 3 * DAY)
    other.queue_job(clock.now + 3 * DAY)
    other.run_job(clock.now + 3 * DAY)
    other.deliver(clock.now + 3 * DAY)
    clock.advance(8)

    report = service(journal, storage, clock).sweep()

    assert report.purged == [s.uid] and report.outputs == 1 and report.files == 2
    assert not s.outputs.exists() and not s.folder.exists()
    assert s.rows() == {"series": 0, "instances": 0, "jobs": 0, "deliveries": 0}
    assert other.outputs.is_dir() and other.rows() == {
        "series": 1,
        "instances": 1,
        "jobs": 1,
        "deliveries": 1,
    }
    [event] = purged_events(journal, s.uid)
    assert "2 instance(s), 1 job(s), 1 delivery(ies)" in event.message
    assert "1 output folder(s) deleted" in event.message


# ---------------------------------------------------------------------- crashes and races


def test_rows_left_by_a_crash_after_the_files_went_are_purged(
    journal: Journal, storage: Path, clock: Clock
) -> None:
    s = Series(storage, journal)
    rels = s.add_many(clock.now, 3)
    s.queue_job(clock.now)
    s.run_job(clock.now)
    s.deliver(clock.now)
    clock.advance(8)
    # a crash between the file deletion and the row deletion: files gone, rows still there
    for rel in rels:
        (storage / rel).unlink()
    shutil.rmtree(s.outputs)

    report = service(journal, storage, clock).sweep()

    assert report.purged == [s.uid] and report.files == 0 and report.missing == 3
    assert s.rows() == {"series": 0, "instances": 0, "jobs": 0, "deliveries": 0}
    assert not s.folder.exists() and not s.outputs.exists()
    [event] = purged_events(journal, s.uid)
    assert "3 already missing" in event.message


class IngestDuringPurge(Journal):
    """A journal that, just before deleting a purged series' rows, starts filing a new instance of
    that series through an Ingestor in another thread (as the receiver would)."""

    ingestor: Ingestor | None = None
    arrival: tuple[InstanceHeader, bytes] | None = None
    done = threading.Event()
    started_during_purge = False

    def purge_series(self, plan: PurgePlan, **kw: Any) -> PurgeCounts | None:
        if self.ingestor is not None and self.arrival is not None:
            header, data = self.arrival
            ingestor = self.ingestor
            self.ingestor = None

            def file_it() -> None:
                ingestor.ingest(header, ExplicitVRLittleEndian, data, Origin("NNUNET", "STORESCU"))
                self.done.set()

            threading.Thread(target=file_it, daemon=True).start()
            # the instance must wait for the purge's lock: not filed while the purge runs
            self.started_during_purge = not self.done.wait(0.3)
        return super().purge_series(plan, **kw)


def test_an_instance_arriving_during_a_purge_waits_and_starts_the_series_anew(
    storage: Path, clock: Clock, tmp_path: Path
) -> None:
    journal = IngestDuringPurge(storage / "journal.sqlite")
    try:
        s = Series(storage, journal)
        s.add_many(clock.now, 3)
        s.unmatched()
        clock.advance(8)
        locks = SeriesLocks()
        ds = make_ct(study_uid=s.study_uid, series_uid=s.uid)
        src = tmp_path / "arrival.dcm"
        ds.save_as(src, enforce_file_format=True)
        header = InstanceHeader(ds.SOPClassUID, ds.SOPInstanceUID, s.study_uid, s.uid, "CT")
        journal.ingestor = Ingestor(Spool(storage), journal, clock=clock, locks=locks)
        journal.arrival = (header, dataset_bytes(src))

        report = service(journal, storage, clock, locks=locks).sweep()

        assert report.purged == [s.uid] and journal.started_during_purge
        wait_for(journal.done.is_set, timeout=10, what="the waiting instance to be filed")
        # the new instance is a fresh series: its file and rows exist, the old ones are gone
        assert [p.name for p in s.folder.iterdir()] == [f"{ds.SOPInstanceUID}.dcm"]
        assert [r.sop_instance_uid for r in journal.instances_of_series(s.uid)] == [ds.SOPInstanceUID]
        row = journal.get_series(s.uid)
        assert row is not None and row.instance_count == 1 and row.state == "receiving"
    finally:
        journal.close()


def test_paths_outside_the_spool_are_refused(
    journal: Journal, storage: Path, clock: Clock, tmp_path: Path
) -> None:
    s = Series(storage, journal)
    rel = s.add(clock.now)
    s.unmatched()
    victim = tmp_path / "victim.dcm"
    victim.write_bytes(b"not ours")
    with journal._tx() as cur:  # a journal row pointing outside storage_dir
        cur.execute("UPDATE instances SET path = ? WHERE series_uid = ?", ("spool/../../victim.dcm", s.uid))
    clock.advance(8)
    retention = service(journal, storage, clock)

    report = retention.sweep()
    retention.sweep()

    assert report.purged == [] and "outside the spool" in report.kept[s.uid]
    assert victim.read_bytes() == b"not ours" and (storage / rel).is_file()
    assert s.rows()["instances"] == 1
    refused = [e for e in journal.recent_events(100) if e.kind == "retention_refused"]
    assert len(refused) == 1 and refused[0].level == "error"  # reported once, not every sweep


def test_a_linked_series_folder_is_refused(
    journal: Journal, storage: Path, clock: Clock, tmp_path: Path
) -> None:
    s = Series(storage, journal)
    rel = s.add(clock.now)
    s.unmatched()
    elsewhere = tmp_path / "elsewhere"
    s.folder.rename(elsewhere)
    s.folder.symlink_to(elsewhere, target_is_directory=True)
    clock.advance(8)
    report = service(journal, storage, clock).sweep()
    assert "outside the spool" in report.kept[s.uid]
    assert (elsewhere / Path(rel).name).is_file()


# ---------------------------------------------------------------------- threads and wiring


def test_the_service_thread_sweeps_when_woken(journal: Journal, storage: Path, clock: Clock) -> None:
    s = Series(storage, journal)
    s.add(clock.now)
    s.unmatched()
    clock.advance(8)
    retention = service(journal, storage, clock, first_delay=3600, interval=3600)
    retention.start()
    try:
        assert s.rows()["series"] == 1  # not before its first period
        retention.wake()
        wait_for(lambda: purged_events(journal), timeout=10, what="retention_purged event")
    finally:
        retention.stop()
    assert not s.folder.exists()


@pytest.mark.dcmtk
def test_node_runs_retention(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    config = config_from_mapping(
        {
            "node": {
                "ae_title": "NNUNET",
                "host": "127.0.0.1",
                "port": 0,
                "storage_dir": str(storage),
                "min_free_disk_mb": 0,
                "retention_days": 1.0 / DAY,  # one second
            }
        },
        base_dir=tmp_path,
    )
    files = write_series(tmp_path / "in", 3)
    with Node(config, retention_interval=0.2) as node:
        assert storescu(node.port, files).returncode == 0
        journal = node.journal
        assert journal is not None
        events = wait_for(lambda: purged_events(journal), timeout=30, what="retention_purged event")
        wait_for(lambda: journal.counts().instances == 0, timeout=30, what="rows gone")
        assert sum(int(e.message.split(" instance(s)")[0].split()[-1]) for e in events) == 3
        assert journal.list_series() == []
    assert not [p for p in (storage / "spool").rglob("*.dcm")]


def test_a_pending_study_job_keeps_each_of_its_input_series(
    journal: Journal, storage: Path, clock: Clock
) -> None:
    from dicom_node.storage.journal import JobInput

    t2 = Series(storage, journal)
    t2.add_many(clock.now, 2)
    adc = Series(storage, journal, study_uid=t2.study_uid)
    adc.add_many(clock.now, 2)
    job_id = journal.create_study_job(
        t2.study_uid,
        JobSpec("p", ["demo"], ["pacs"], {}),
        inputs=[JobInput(t2.uid, 2), JobInput(adc.uid, 2)],
        trigger="study_quiet",
        now=clock.now,
    )
    assert job_id is not None
    for s in (t2, adc):
        journal.set_routing(s.uid, rules=["p"], quiet_seconds=5.0)
        journal.create_jobs(s.uid, generation=2, jobs=[], trigger="study_quiet", now=clock.now)
    clock.advance(30)
    report = service(journal, storage, clock).sweep()
    assert report.purged == [] and set(report.kept) == {t2.uid, adc.uid}
