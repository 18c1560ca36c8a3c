"""Real hospital traffic through the whole node (in-process, real tiny model, dcmtk peers): unchanged
re-sends, extended re-sends, a series of two acquisitions, modality forwarding."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.config import NodeConfig, config_from_mapping
from dicom_node.node import Node
from dicom_node.storage.journal import Journal
from tests.support.dicom_series import edit_files
from tests.support.instances import dataset_bytes
from tests.support.node_process import write_config
from tests.support.node_setup import (
    model_spec,
    node_config,
    phantom_series,
    received_segs,
    referenced_instances,
    storescu,
)
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_spec(tmp_path_factory.mktemp("spec"))


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "pacs"
    with dcmtk_storescp(port, out, options=("--bit-preserving",)):
        yield port, out


def make_config(tmp_path: Path, spec: Path, dest_port: int, **kw: object) -> NodeConfig:
    return config_from_mapping(node_config(tmp_path / "var", spec, dest_port, **kw), base_dir=tmp_path)  # type: ignore[arg-type]


def journal_of(node: Node) -> Journal:
    assert node.journal is not None
    return node.journal


def settled(journal: Journal, jobs: int, deliveries: int) -> bool:
    """``jobs`` model jobs finished and ``deliveries`` deliveries done, nothing left to do."""
    finished = [j for j in journal.list_jobs() if j.state in ("done", "empty")]
    done = journal.list_deliveries(state="done")
    busy = [d for d in journal.list_deliveries() if d.state in ("pending", "sending")]
    series = journal.list_series()
    return (
        len(finished) >= jobs
        and len(done) >= deliveries
        and not busy
        and all(s.state != "receiving" for s in series)
    )


def test_an_unchanged_resend_runs_nothing_and_an_extended_one_runs_once(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=13)  # ImagesInAcquisition 13 in every file
    first, extra = files[:12], files[12:]
    with Node(make_config(tmp_path, spec, dest_port, quiet_seconds=1.0)) as node:
        journal = journal_of(node)
        assert storescu(node.port, first).returncode == 0
        wait_for(lambda: settled(journal, 1, 1), timeout=180, what="first result delivered")

        assert storescu(node.port, first).returncode == 0  # the PACS sends the same study again
        wait_for(lambda: settled(journal, 1, 2), timeout=120, what="the result delivered again")
        jobs = journal.list_jobs()
        assert len(jobs) == 1  # no inference for an unchanged re-send
        assert [e.kind for e in journal.recent_events(50) if e.kind == "redelivered"] == ["redelivered"]

        assert storescu(node.port, first + extra).returncode == 0  # re-sent with one instance more
        wait_for(lambda: settled(journal, 2, 3), timeout=180, what="the re-run delivered")
        jobs = sorted(journal.list_jobs(), key=lambda j: j.id)
    assert len(jobs) == 2, jobs  # exactly one re-run, not one per instance
    assert jobs[1].state in ("done", "empty") and jobs[1].trigger == "quiet_period"
    [paths] = received_segs(out).values()  # one SEG UID throughout
    assert len(referenced_instances(paths[-1])) == 13


def test_two_acquisitions_arriving_in_halves_give_one_job_over_every_instance(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=16)

    def two_acquisitions(ds: object, index: int) -> None:
        ds.AcquisitionNumber = index % 2 + 1  # type: ignore[attr-defined]
        ds.ImagesInAcquisition = 8  # type: ignore[attr-defined]  # counts one acquisition

    edit_files(files, two_acquisitions)
    with Node(make_config(tmp_path, spec, dest_port, quiet_seconds=4.0)) as node:
        journal = journal_of(node)
        assert storescu(node.port, files[:8]).returncode == 0  # 8 instances: the announced count
        assert storescu(node.port, files[8:]).returncode == 0
        wait_for(lambda: settled(journal, 1, 1), timeout=180, what="the result delivered")
        jobs = journal.list_jobs()
    assert len(jobs) == 1 and jobs[0].generation == 16, jobs
    [[seg]] = received_segs(out).values()
    assert referenced_instances(seg) == {
        str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files
    }


def test_a_forwarding_rule_sends_every_instance_byte_for_byte_and_its_seg(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=10)
    rule = {"forward": True}
    with Node(make_config(tmp_path, spec, dest_port, rule=rule)) as node:
        journal = journal_of(node)
        assert storescu(node.port, files).returncode == 0
        wait_for(lambda: settled(journal, 1, 11), timeout=180, what="instances and SEG delivered")
        forward_jobs = [j for j in journal.list_jobs() if j.forward]
    assert len(forward_jobs) == 1 and forward_jobs[0].models == ()
    received = {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in out.rglob("*") if p.is_file()
    }
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(received[uid]) == dataset_bytes(path)  # UIDs kept, bytes as received
    assert len(received_segs(out)) == 1


def dicom_node_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "dicom-node"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_operator_actions_work_against_a_running_node(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    dest_port, _ = destination
    files = phantom_series(tmp_path / "ct", slices=8)
    series_uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    mapping = node_config(tmp_path / "var", spec, dest_port)
    config_path = write_config(tmp_path / "node.yaml", mapping)
    with Node(config_from_mapping(mapping, base_dir=tmp_path)) as node:
        journal = journal_of(node)
        assert storescu(node.port, files).returncode == 0
        wait_for(lambda: settled(journal, 1, 1), timeout=180, what="first result delivered")
        [job] = journal.list_jobs()
        [first_delivery] = journal.list_deliveries()

        retried = dicom_node_cli("retry", str(job.id), "--config", str(config_path))
        assert retried.returncode == 0, retried.stderr
        wait_for(lambda: settled(journal, 2, 2), timeout=180, what="the retried job delivered")

        resent = dicom_node_cli("resend", str(first_delivery.id), "--config", str(config_path))
        assert resent.returncode == 0, resent.stderr
        wait_for(lambda: settled(journal, 2, 3), timeout=60, what="the delivery sent again")

        rerun = dicom_node_cli("rerun", series_uid, "--rule", "ct-demo", "--config", str(config_path))
        assert rerun.returncode == 0, rerun.stderr
        wait_for(lambda: settled(journal, 3, 4), timeout=180, what="the rerun delivered")

        unknown = dicom_node_cli("retry", "999", "--config", str(config_path))
        no_rule = dicom_node_cli("rerun", series_uid, "--rule", "nope", "--config", str(config_path))
        jobs = sorted(journal.list_jobs(), key=lambda j: j.id)
        deliveries = sorted(journal.list_deliveries(), key=lambda d: d.id)
        events = [e for e in journal.recent_events(50) if e.kind == "manual"]
    assert [j.trigger for j in jobs] == ["expected_count", "manual", "manual"]
    assert all(j.state in ("done", "empty") for j in jobs)
    assert deliveries[2].path == first_delivery.path and deliveries[2].state == "done"
    assert len(events) == 3
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "no job 999")
    assert no_rule.returncode == 1 and "for rule 'nope'" in no_rule.stderr


def test_a_destination_down_then_up_gets_every_forwarded_instance_and_status_says_why(
    tmp_path: Path, spec: Path
) -> None:
    dest_port = free_port()  # nothing listens yet
    out = tmp_path / "pacs"
    files = phantom_series(tmp_path / "ct", slices=6)
    mapping = node_config(tmp_path / "var", spec, dest_port, rule={"models": [], "forward": True})
    config_path = write_config(tmp_path / "node.yaml", mapping)
    with Node(config_from_mapping(mapping, base_dir=tmp_path)) as node:  # starts despite the dead peer
        journal = journal_of(node)
        wait_for(
            lambda: [e for e in journal.recent_events(20) if e.kind == "destination_unreachable"],
            timeout=30,
            what="the start-up C-ECHO warning",
        )
        assert storescu(node.port, files).returncode == 0
        wait_for(
            lambda: [e for e in journal.recent_events(50) if e.kind == "delivery_retry"],
            timeout=60,
            what="a failed delivery attempt",
        )
        status = dicom_node_cli("status", "--config", str(config_path))
        assert status.returncode == 0, status.stderr
        assert (
            f"destination pacs: C-ECHO to STORESCP@127.0.0.1:{dest_port}: connection refused" in status.stdout
        )
        assert "not delivered to pacs" in status.stdout and "connection refused" in status.stdout
        with dcmtk_storescp(dest_port, out, options=("--bit-preserving",)):
            wait_for(
                lambda: len(journal.list_deliveries(state="done")) == len(files),
                timeout=60,
                what="every instance delivered once the destination is up",
            )
            received = {
                str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
                for p in out.rglob("*")
                if p.is_file()
            }
    for path in files:
        assert dataset_bytes(
            received[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        ) == dataset_bytes(path)
