"""Hostile input against ``dicom-node serve`` as a real subprocess: instances whose header the node
could not parse later (an unknown VR after the UIDs and after (0020,1002), sequences nested 5,000 deep)
are refused when they arrive with 0xC003 and the reason, nothing of them is filed, and a normal series
sent afterwards still gets its SEG at a dcmtk storescp."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from dicom_node.net import dimse_status as st
from dicom_node.net.peers import Peer
from dicom_node.net.scu import send_files
from tests.dicom_node.test_faults import node_process, read_journal, wait_for_final_seg
from tests.support.certificates import make_pki
from tests.support.deflate_bomb import write_deflate_bomb
from tests.support.instances import associate_rq_pdu, recv_pdu
from tests.support.node_process import write_config
from tests.support.node_setup import (
    model_spec,
    node_config,
    parse_acknowledged,
    phantom_series,
    storescu,
    storescu_command,
)
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import free_port, peer_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

_PIXEL_DATA = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in little endian


def with_unknown_vr(src: Path, dst: Path) -> Path:
    """``src`` with the VR of its first group 0028 element (after the UIDs and (0020,1002))
    replaced by an unknown one."""
    data = src.read_bytes()
    at = data.index(b"\x28\x00", data.index(b"\x20\x00\x0e\x00"))
    dst.write_bytes(data[: at + 4] + b"ZZ" + data[at + 6 :])
    return dst


def with_deep_sequence(src: Path, dst: Path, depth: int = 5000) -> Path:
    """``src`` with (0040,A730) Content Sequence nested ``depth`` deep just before its pixel data."""
    data = src.read_bytes()
    at = data.rindex(_PIXEL_DATA)
    opening = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    dst.write_bytes(data[:at] + opening * depth + closing * depth + data[at:])
    return dst


def test_poisoned_instances_are_refused_at_receive_and_the_next_series_gets_its_seg(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    dest_port, out = free_port(), tmp_path / "pacs"
    spec = model_spec(tmp_path / "spec")
    config = write_config(tmp_path / "node.yaml", node_config(storage, spec, dest_port))
    source = phantom_series(tmp_path / "bad-src", slices=4, seed=1)
    poisoned = [
        with_unknown_vr(source[0], tmp_path / "unknown-vr.dcm"),
        with_deep_sequence(source[1], tmp_path / "nested.dcm"),
    ]
    files = phantom_series(tmp_path / "ct", slices=16)
    with dcmtk_storescp(dest_port, out), node_process(config, tmp_path / "node.log") as node:
        results = send_files(poisoned, Peer(node.ae_title, "127.0.0.1", node.port), "HOSTILE")
        assert [r.status for r in results] == [st.CANNOT_UNDERSTAND_UNREADABLE] * 2, results
        run = storescu(node.port, files)
        assert run.returncode == 0 and len(run.acknowledged) == len(files), run.output
        wait_for_final_seg(storage, out, files)
        events = read_journal(storage, lambda j: j.recent_events(level="warning")) or []
    reasons = [e.message for e in events if e.kind == "store_rejected"]
    assert len(reasons) == 2, reasons
    assert any("Value Representation 'ZZ'" in r for r in reasons), reasons
    assert any("nested too deeply" in r for r in reasons), reasons
    instances = read_journal(storage, lambda j: j.counts().instances)
    assert instances == len(files)  # nothing of the poisoned instances filed
    spooled = [p for p in (storage / "spool").rglob("*") if p.is_file()]
    assert len(spooled) == len(files)


def test_a_calling_ae_title_with_newline_and_escape_cannot_forge_a_log_line(tmp_path: Path) -> None:
    """The title reaches pynetdicom's and the node's log calls before any check: every line of the
    node's log stays one record, with the control characters shown escaped."""
    storage = tmp_path / "var"
    config = write_config(tmp_path / "node.yaml", node_config(storage, model_spec(tmp_path / "spec"), 9))
    forged = "X\n1999 FORGED\x1b[2J"
    with node_process(config, tmp_path / "node.log") as node:
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
            sock.sendall(associate_rq_pdu("NNUNET", forged))
            pdu_type, _ = recv_pdu(sock)
            assert pdu_type in (0x02, 0x03, 0x07)  # answered (accepted, rejected or aborted)
        wait_for(lambda: "1999 FORGED" in node.log(), timeout=30, what="the association logged")
        node.stop()
        log = node.log()
    assert "\x1b" not in log
    assert not [line for line in log.splitlines() if line.startswith("1999 FORGED")]


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def test_a_deflate_bomb_is_refused_with_out_of_resources_and_bounded_memory(tmp_path: Path) -> None:
    """1 MB on the wire, 1.06 GiB inflated, the node's ``max_dataset_bytes`` 1 GiB (the default, 2 GiB,
    would take it): refused with 0xA700 and the reason, nothing filed, and the node's peak RSS grows
    by less than 100 MiB (the header is inflated at most 16 MiB, the rest is counted and discarded)."""
    storage = tmp_path / "var"
    data = node_config(storage, model_spec(tmp_path / "spec"), 9)
    data["node"]["max_dataset_bytes"] = 1 << 30
    config = write_config(tmp_path / "node.yaml", data)
    [template] = phantom_series(tmp_path / "ct", slices=4)[:1]
    bomb = write_deflate_bomb(template, tmp_path / "bomb.dcm", (1 << 30) + (64 << 20))
    assert bomb.stat().st_size < 2 * 1024 * 1024
    with node_process(config, tmp_path / "node.log") as node:
        peer = Peer(node.ae_title, "127.0.0.1", node.port)
        assert [r.status for r in send_files([template], peer, "WARMUP")] == [st.SUCCESS]
        before = peak_rss_mib(node.process.pid)
        [result] = send_files([bomb], peer, "BOMBER")
        after = peak_rss_mib(node.process.pid)
        events = read_journal(storage, lambda j: j.recent_events(level="warning")) or []
    print(f"node peak RSS: {before:.0f} MiB before the bomb, {after:.0f} MiB after")
    assert result.status == st.OUT_OF_RESOURCES, result
    assert after - before < 100
    [event] = [e for e in events if e.kind == "store_rejected"]
    assert "inflates to more than" in event.message
    assert read_journal(storage, lambda j: j.counts().instances) == 1  # the warm-up instance only
    assert len([p for p in (storage / "spool").rglob("*") if p.is_file()]) == 1


def test_tls_both_ways_storescu_to_the_node_and_its_seg_to_storescp(tmp_path: Path) -> None:
    """dcmtk storescu +tls (client certificate of the node's CA) sends a series; the node's SEG goes
    to dcmtk storescp +tls, which requires the node's client certificate."""
    pki = make_pki(tmp_path / "pki")
    storage = tmp_path / "var"
    dest_port, out = free_port(), tmp_path / "pacs"
    data = node_config(storage, model_spec(tmp_path / "spec"), dest_port)
    data["node"]["tls"] = pki.node_tls()
    data["destinations"]["pacs"]["tls"] = {
        "ca_certificates": str(pki.ca),
        "certificate": str(pki.client.certificate),
        "private_key": str(pki.client.key),
    }
    config = write_config(tmp_path / "node.yaml", data)
    files = phantom_series(tmp_path / "ct", slices=16)
    scp_tls = ["+tls", str(pki.server.key), str(pki.server.certificate), "+cf", str(pki.ca)]
    scu_tls = ["+tls", str(pki.client.key), str(pki.client.certificate), "+cf", str(pki.ca)]
    with (
        dcmtk_storescp(dest_port, out, options=scp_tls),
        node_process(config, tmp_path / "node.log") as node,
    ):
        sent = subprocess.run(
            storescu_command(node.port, files)[:1] + scu_tls + storescu_command(node.port, files)[1:],
            env=peer_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sent.returncode == 0 and len(parse_acknowledged(sent.stdout + sent.stderr)) == len(files)
        wait_for_final_seg(storage, out, files)
