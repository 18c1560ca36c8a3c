"""Who may connect: a calling AE accepted only from its configured addresses; DICOM TLS on the SCP
with client certificates required (dcmtk storescu +tls, certificates made with openssl here); a
calling AE's disk quota."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.net import dimse_status as st
from dicom_node.net.peers import Peer
from dicom_node.net.scu import send_files
from tests.support.certificates import Pki, make_pki
from tests.support.instances import make_ct
from tests.support.scp import running_node
from tests.support.tools import dcmtk, peer_env


def echo_from(port: int, calling: str, source: str) -> str:
    """C-ECHO as ``calling`` from the local address ``source``: 'accepted' or 'rejected'."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="NNUNET", bind_address=(source, 0))
    try:
        return "accepted" if assoc.is_established else "rejected" if assoc.is_rejected else "failed"
    finally:
        if assoc.is_established:
            assoc.release()


def test_an_ae_with_configured_hosts_is_refused_from_any_other_address(tmp_path: Path) -> None:
    with running_node(tmp_path / "storage", calling_ae_hosts={"MODALITY": ["127.0.0.1"]}) as node:
        assert echo_from(node.port, "MODALITY", "127.0.0.1") == "accepted"
        assert echo_from(node.port, "MODALITY", "127.0.0.2") == "rejected"
        assert echo_from(node.port, "OTHER", "127.0.0.2") == "accepted"  # not restricted
        [event] = [e for e in node.journal.recent_events() if e.kind == "association_rejected"]
    assert "MODALITY" in event.message and "not allowed from 127.0.0.2" in event.message


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def storescu_tls(port: int, files: list[Path], *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("storescu"), "-aet", "MODALITY", "-aec", "NNUNET", *tls, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.dcmtk
def test_tls_scp_accepts_a_client_with_a_certificate_of_its_ca_and_refuses_others(
    tmp_path: Path, pki: Pki
) -> None:
    tls = pki.node_tls()
    ct = tmp_path / "ct.dcm"
    make_ct().save_as(ct, enforce_file_format=True)
    with running_node(tmp_path / "storage", tls=tls) as node:
        ok = storescu_tls(
            node.port, [ct], "+tls", str(pki.client.key), str(pki.client.certificate), "+cf", str(pki.ca)
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert len(node.spool_files()) == 1
        rogue = storescu_tls(
            node.port, [ct], "+tls", str(pki.rogue.key), str(pki.rogue.certificate), "+cf", str(pki.ca)
        )
        anonymous = storescu_tls(node.port, [ct], "+tla", "+cf", str(pki.ca))
        plain = storescu_tls(node.port, [ct])
        assert echo_from(node.port, "MODALITY", "127.0.0.1") == "failed"  # no TLS at all
        assert node.journal.counts().instances == 1
    for refused in (rogue, anonymous, plain):
        assert refused.returncode != 0, refused.stdout + refused.stderr


def test_a_calling_ae_over_its_disk_quota_is_refused_and_others_go_on(tmp_path: Path) -> None:
    files = []
    for k in range(3):
        path = tmp_path / f"ct{k}.dcm"
        make_ct(rows=128, columns=128).save_as(path, enforce_file_format=True)  # ~33 KB each
        files.append(path)
    size = files[0].stat().st_size
    quota_mb = 2.5 * size / (1024 * 1024)  # room for two
    with running_node(tmp_path / "storage", calling_ae_quota_mb={"GREEDY": quota_mb}) as node:
        peer = Peer("NNUNET", "127.0.0.1", node.port)
        greedy = [r.status for r in send_files(files, peer, "GREEDY")]
        other = [r.status for r in send_files(files[2:], peer, "MODEST")]
        instances = node.journal.counts().instances
        [event] = [e for e in node.journal.recent_events() if e.kind == "store_refused"]
    assert greedy == [st.SUCCESS, st.SUCCESS, st.OUT_OF_RESOURCES]
    assert other == [st.SUCCESS]
    assert instances == 3
    assert "GREEDY is over its disk quota" in event.message
