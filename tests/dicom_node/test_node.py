"""The whole node in-process with the real in-process nnU-Net executor: dcmtk storescu -> node ->
dcmtk storescp; late arrivals; unmatched series; lifecycle."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from dicom_node.config import NodeConfig, config_from_mapping, load_config
from dicom_node.errors import NodeError
from dicom_node.node import Node
from dicom_node.storage.journal import Journal
from tests.support.node_process import start_node, write_config
from tests.support.node_setup import (
    model_spec,
    node_config,
    parse_acknowledged,
    phantom_series,
    received_segs,
    referenced_instances,
    referenced_series,
    storescu,
    storescu_command,
)
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import dciodvfy, free_port, peer_env, wait_for
from tests.support.written_files import files_in

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_spec(tmp_path_factory.mktemp("spec"))


def make_config(tmp_path: Path, spec: Path, dest_port: int, **kw: object) -> NodeConfig:
    return config_from_mapping(node_config(tmp_path / "var", spec, dest_port, **kw), base_dir=tmp_path)  # type: ignore[arg-type]


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "pacs"
    with dcmtk_storescp(port, out):
        yield port, out


def journal_of(node: Node) -> Journal:
    assert node.journal is not None
    return node.journal


def test_storescu_to_node_to_storescp(tmp_path: Path, spec: Path, destination: tuple[int, Path]) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=12)
    with Node(make_config(tmp_path, spec, dest_port)) as node:
        assert node.port > 0 and node.address == f"NNUNET@127.0.0.1:{node.port}"
        run = storescu(node.port, files)
        assert run.returncode == 0, run.output
        assert len(run.acknowledged) == len(files)
        segs = wait_for(lambda: received_segs(out), timeout=120, what="SEG at storescp")
        journal = journal_of(node)
        [job] = journal.list_jobs()
        # the phantom writer sets ImagesInAcquisition: complete as soon as all arrived
        assert (job.state, job.trigger, job.rule_name) == ("done", "expected_count", "ct-demo")
        assert set(job.timings) >= {"load", "inference", "seg_write", "job"}
        [delivery] = wait_for(lambda: journal.list_deliveries(state="done"), timeout=30, what="delivery")
    [(uid, [seg_path])] = segs.items()
    assert delivery.sop_instance_uid == uid and delivery.last_status == 0
    source = dcmread(files[0], stop_before_pixels=True)
    assert referenced_series(seg_path) == {str(source.SeriesInstanceUID)}
    assert len(referenced_instances(seg_path)) == len(files)
    report = dciodvfy(seg_path)
    assert report.errors == [], report.output


def test_late_arrival_reruns_and_replaces_with_the_same_seg_uid(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=12)
    with Node(make_config(tmp_path, spec, dest_port)) as node:
        journal = journal_of(node)
        assert storescu(node.port, files[:-1]).returncode == 0
        wait_for(lambda: journal.list_jobs(), timeout=60, what="first job")
        assert storescu(node.port, files[-1:]).returncode == 0  # the straggler
        wait_for(
            lambda: (
                len([d for d in journal.list_deliveries(state="done")]) >= 1
                and journal.list_jobs()[0].generation == len(files)
                and journal.list_jobs()[0].state in ("done", "empty")
            ),
            timeout=120,
            what="the re-run for the full series delivered",
        )
        jobs = sorted(journal.list_jobs(), key=lambda j: j.id)
        assert len(jobs) == 2
        assert jobs[0].state in ("done", "superseded") and jobs[1].generation == len(files)
        final_deliveries = [d for d in journal.list_deliveries(state="done") if d.job_id == jobs[1].id]
        assert final_deliveries
    segs = received_segs(out)
    assert len(segs) == 1, segs  # one SEG UID: the re-run replaced the first result
    [paths] = segs.values()
    assert len(paths) == 1
    assert len(referenced_instances(paths[0])) == len(files)


def test_association_release_completes_the_series_when_the_rule_says_so(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=6)
    rule = {"complete_on_release": True, "use_expected_count": False, "series_quiet_seconds": 600}
    with Node(make_config(tmp_path, spec, dest_port, rule=rule)) as node:
        assert storescu(node.port, files).returncode == 0  # one association, released at the end
        wait_for(lambda: received_segs(out), timeout=120, what="SEG")
        [job] = journal_of(node).list_jobs()
        assert job.trigger == "association_released"


def test_unmatched_series_is_filed_but_not_processed(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "mr", slices=4, modality="MR")
    with Node(make_config(tmp_path, spec, dest_port)) as node:
        journal = journal_of(node)
        assert storescu(node.port, files).returncode == 0
        series = wait_for(
            lambda: next((s for s in journal.list_series() if s.state == "unmatched"), None),
            timeout=30,
            what="unmatched series",
        )
        assert series.instance_count == 4
        assert "modality: 'MR' does not fully match 'CT'" in series.routing_note
        assert journal.list_jobs() == []
    assert files_in(out) == []  # nothing, not even a half-written file
    assert len(list((tmp_path / "var" / "spool").rglob("*.dcm"))) == 4


def test_stop_closes_the_port_and_the_journal(tmp_path: Path, spec: Path) -> None:
    node = Node(make_config(tmp_path, spec, free_port()))
    node.start()
    port = node.port
    node.stop()
    node.stop()  # twice is fine
    assert node.journal is None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    # a restart on the same storage works
    with Node(make_config(tmp_path, spec, free_port())) as again:
        assert again.port > 0


def test_drop_folder_files_are_ingested_and_processed(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    dest_port, out = destination
    files = phantom_series(tmp_path / "ct", slices=8)
    with Node(make_config(tmp_path, spec, dest_port)) as node:
        journal = journal_of(node)
        incoming = tmp_path / "var" / "incoming"
        for f in files:
            shutil.copy(f, incoming / f.name)
        wait_for(lambda: received_segs(out), timeout=120, what="SEG of the dropped series")
        [series] = journal.list_series()
        assert series.instance_count == len(files)
        assert (series.called_ae, series.calling_ae) == ("NNUNET", "DROPFOLDER")


def test_rules_file_change_is_applied_to_new_series(tmp_path: Path, spec: Path) -> None:
    config_path = tmp_path / "node.yaml"
    data = node_config(
        tmp_path / "var",
        spec,
        free_port(),
        rule={"match": {"modality": "CT", "series_description": "nothing"}},
    )
    config_path.write_text(yaml.safe_dump(data))
    with Node(load_config(config_path)) as node:
        journal = journal_of(node)
        first = phantom_series(tmp_path / "a", slices=4)
        assert storescu(node.port, first).returncode == 0
        wait_for(
            lambda: [s for s in journal.list_series() if s.state == "unmatched"],
            timeout=30,
            what="unmatched",
        )
        data["rules"][0]["match"]["series_description"] = "(?i).*phantom.*"
        data["rules"][0]["name"] = "ct-reloaded"
        config_path.write_text(yaml.safe_dump(data))
        wait_for(lambda: node.rules.names == ["ct-reloaded"], timeout=30, what="rules reloaded")
        second = phantom_series(tmp_path / "b", slices=4, seed=1)
        assert storescu(node.port, second).returncode == 0
        job = wait_for(lambda: next(iter(journal.list_jobs()), None), timeout=30, what="job by the new rule")
        assert job.rule_name == "ct-reloaded"
        assert job.series_uid == str(dcmread(second[0], stop_before_pixels=True).SeriesInstanceUID)


def test_serve_prints_its_address_and_stops_cleanly_on_sigterm(tmp_path: Path, spec: Path) -> None:
    """SIGTERM while a series is being received: exit status 0, every acknowledged instance filed,
    the port closed."""
    storage = tmp_path / "var"
    config = write_config(tmp_path / "node.yaml", node_config(storage, spec, free_port()))
    files = phantom_series(tmp_path / "ct", slices=40)
    node = start_node(config, log_path=tmp_path / "node.log")
    try:
        assert (node.ae_title, node.host) == ("NNUNET", "127.0.0.1")
        sender = subprocess.Popen(
            storescu_command(node.port, files),
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(lambda: len(list((storage / "spool").rglob("*.dcm"))) >= 3, timeout=60, interval=0.01)
        assert node.stop() == 0, node.log()
        output, _ = sender.communicate(timeout=60)
    finally:
        node.stop()
    acknowledged = parse_acknowledged(output)
    journal = Journal(storage / "journal.sqlite", readonly=True)
    try:
        known = {r["sop_instance_uid"] for r in journal._query("SELECT sop_instance_uid FROM instances")}
    finally:
        journal.close()
    for path in acknowledged:
        assert str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) in known
    assert "stopped" in node.log()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", node.port)) != 0


def test_a_port_in_use_is_a_clear_start_error(tmp_path: Path, spec: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        data = node_config(tmp_path / "var", spec, free_port())
        data["node"]["port"] = busy.getsockname()[1]
        node = Node(config_from_mapping(data, base_dir=tmp_path))
        with pytest.raises(NodeError, match=r"cannot listen on 127\.0\.0\.1:\d+"), node:
            pass
    assert node.journal is None and node.worker is None  # what had started was stopped
