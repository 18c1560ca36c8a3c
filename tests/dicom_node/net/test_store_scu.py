"""The sender's own upper layer against real peers: dcmtk storescp (small and large PDUs, refusing,
aborting), the node's SCP over DICOM TLS, and peers that vanish or stall behind a relay that cuts the
connection."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.net.peers import Peer
from dicom_node.net.scu import SendResult, send_files
from dicom_node.net.tls import ClientTls, client_context
from tests.support.certificates import make_pki
from tests.support.instances import dataset_bytes, dcmtk_storescp, make_private_object, write_series
from tests.support.scp import running_node
from tests.support.tools import dcmtk, free_port, peer_env, wait_for


def _sent_in_time(send: Callable[[], list[SendResult]], deadline: float = 60) -> list[SendResult]:
    """``send()`` in a thread; the test fails if it has not returned by ``deadline`` seconds (a hang)."""
    out: list[list[SendResult]] = []
    thread = threading.Thread(target=lambda: out.append(send()), daemon=True)
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), "send_files hung"
    return out[0]


@pytest.mark.dcmtk
@pytest.mark.parametrize("max_pdu", ["4096", "131072"])
def test_files_arrive_byte_identical_at_small_and_large_pdus(tmp_path: Path, max_pdu: str) -> None:
    files = write_series(tmp_path / "in", 3, rows=64, columns=64)
    files += write_series(tmp_path / "big", 1, rows=1500, columns=1500)  # 4.5 MB: several read pieces
    private = tmp_path / "in" / "csa.dcm"
    make_private_object().save_as(private, enforce_file_format=True)
    files.append(private)
    out = tmp_path / "out"
    with dcmtk_storescp(out, "+B", "-pm", "--max-pdu", max_pdu) as port:
        results = send_files(files, Peer("STORESCP", "127.0.0.1", port), "SCU", timeout=20)
    assert [(r.path, r.status, r.error) for r in results] == [(p, 0, "") for p in files]
    received = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in out.iterdir()}
    for src in files:
        uid = dcmread(src, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(received[uid]) == dataset_bytes(src)


@pytest.mark.dcmtk
def test_a_peer_accepting_no_context_fails_the_files_naming_what_was_proposed(tmp_path: Path) -> None:
    private = tmp_path / "csa.dcm"
    make_private_object(sop_class_uid="1.2.3.4.5.6").save_as(private, enforce_file_format=True)
    with dcmtk_storescp(tmp_path / "out") as port:  # no -pm: unknown SOP classes refused
        [result] = _sent_in_time(lambda: send_files([private], Peer("STORESCP", "127.0.0.1", port), "SCU"))
    assert result.status is None
    assert result.error == (
        "the peer accepted no presentation context (proposed: 1.2.3.4.5.6 in Explicit VR Little Endian"
        " (1.2.840.10008.1.2.1))"
    )


@contextlib.contextmanager
def _storescp_refusing(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [dcmtk("storescp"), "--refuse", "-od", str(tmp_path), str(port)],
        env=peer_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: proc.poll() is not None or _listening(port), timeout=20, what="storescp")
        assert proc.poll() is None, "storescp did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.dcmtk
def test_a_rejected_association_fails_every_file_with_the_reason_in_words(tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 2)
    with _storescp_refusing(tmp_path / "out") as port:
        results = _sent_in_time(lambda: send_files(files, Peer("STORESCP", "127.0.0.1", port), "SCU"))
    assert [r.error for r in results] == [
        "association rejected: Rejected Permanent by Service User: No reason given"
    ] * 2


@pytest.mark.dcmtk
def test_a_peer_aborting_mid_send_fails_the_rest_with_its_reason(tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 3)
    with dcmtk_storescp(tmp_path / "out", "--abort-after") as port:
        results = _sent_in_time(
            lambda: send_files(files, Peer("STORESCP", "127.0.0.1", port), "SCU", timeout=20)
        )
    assert [(r.status, r.error) for r in results] == [
        (None, "no response: association aborted: DUL service-user"),
        (None, "association aborted: DUL service-user"),
        (None, "association aborted: DUL service-user"),
    ]


class _Relay:
    """A TCP relay to ``port`` that forwards the sender's first ``cut_after`` bytes, then either closes
    both connections (the peer vanishes) or keeps them open and forwards nothing more (it stalls)."""

    def __init__(self, port: int, cut_after: int, *, stall: bool) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._target, self._cut_after, self._stall = port, cut_after, stall
        self._done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self._target))
        threading.Thread(target=self._pipe, args=(server, client, None), daemon=True).start()
        self._pipe(client, server, self._cut_after)
        if not self._stall:
            client.close()
            server.close()
        self._done.wait()
        client.close()
        server.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, budget: int | None) -> None:
        with contextlib.suppress(OSError):
            while budget is None or budget > 0:
                data = src.recv(4096 if budget is None else min(4096, budget))
                if not data:
                    return
                dst.sendall(data)
                if budget is not None:
                    budget -= len(data)

    def close(self) -> None:
        self._done.set()
        self.listener.close()


@pytest.mark.dcmtk
@pytest.mark.parametrize("stall", [False, True], ids=["vanishes", "stalls"])
def test_a_peer_vanishing_or_stalling_mid_send_fails_the_rest_without_hanging(
    tmp_path: Path, stall: bool
) -> None:
    files = write_series(tmp_path / "in", 6, rows=64, columns=64)  # ~9 kB each
    with dcmtk_storescp(tmp_path / "out", "--ignore") as port:
        relay = _Relay(port, cut_after=30_000, stall=stall)  # cut inside the 3rd or 4th file
        try:
            results = _sent_in_time(
                lambda: send_files(files, Peer("STORESCP", "127.0.0.1", relay.port), "SCU", timeout=2)
            )
        finally:
            relay.close()
    stored = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert 2 <= len(stored) <= 4 and results[: len(stored)] == stored
    why = failed[0].error.removeprefix("no response: ")
    if stall:
        assert why == "no response within 2 s (association aborted)"
    else:  # a close with our data unread resets the connection: either may be seen first
        assert why in ("the peer closed the connection", "connection lost: Connection reset by peer")
    assert [r.error for r in failed] == [f"no response: {why}"] + [why] * (len(failed) - 1)


@pytest.mark.dcmtk
def test_repeated_sends_of_large_instances_to_storescp_never_lose_a_response(tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 100, rows=512, columns=512)
    with dcmtk_storescp(tmp_path / "out", "--ignore") as port:
        for _ in range(3):
            results = send_files(files, Peer("STORESCP", "127.0.0.1", port), "SCU", timeout=10)
            assert [r.error for r in results if not r.ok] == []


@pytest.mark.dcmtk
def test_pynetdicom_own_requestor_thread_takes_responses(tmp_path: Path) -> None:
    """Upstream pynetdicom (3.0.4) still has the race the node's sender avoids by not using its
    requestor: the association thread takes a DIMSE response off the queue that ``send_c_store`` was
    going to wait for, and drops it ("Received unexpected C-STORE service message"; the sender then
    waits for its DIMSE timeout). When this fails, pynetdicom no longer takes responses there."""
    with dcmtk_storescp(tmp_path / "out", "--ignore") as port:
        ae = AE(ae_title="SCU")
        ae.add_requested_context(Verification)
        ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 10
        assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP")
        assert assoc.is_established
        try:
            rsp = C_STORE()
            rsp.MessageIDBeingRespondedTo = 1
            rsp.Status = 0x0000
            assoc.dimse.msg_queue.put((1, rsp))
            wait_for(assoc.dimse.msg_queue.empty, timeout=20, what="pynetdicom's thread taking the response")
        finally:
            assoc.abort()


def test_tls_sends_to_a_node_requiring_client_certificates_and_says_why_a_handshake_fails(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = pki.node_tls()
    files = write_series(tmp_path / "in", 3, rows=128, columns=128)  # ~33 kB: several PDUs each
    trusted = client_context(
        ClientTls(ca_certificates=pki.ca, certificate=pki.client.certificate, private_key=pki.client.key),
        "test",
    )
    system_cas = client_context(ClientTls(), "test")  # does not trust the node's CA
    with running_node(tmp_path / "storage", tls=tls) as node:
        results = send_files(files, Peer("NNUNET", "127.0.0.1", node.port, tls=trusted), "SCU", timeout=20)
        [refused] = send_files(files[:1], Peer("NNUNET", "127.0.0.1", node.port, tls=system_cas), "SCU")
        stored = node.journal.counts().instances
        port = node.port
    assert [(r.status, r.error) for r in results] == [(0, "")] * 3
    assert stored == 3
    assert refused.status is None
    assert refused.error.startswith(f"TLS handshake with 127.0.0.1:{port} failed:")
    assert "CERTIFICATE_VERIFY_FAILED" in refused.error


@pytest.mark.dcmtk
def test_a_file_gone_between_planning_and_sending_fails_alone_and_the_association_goes_on(
    tmp_path: Path,
) -> None:
    files = write_series(tmp_path / "in", 3)

    def remove_the_second(result: SendResult) -> None:
        if result.path == files[0]:
            files[1].unlink()

    with dcmtk_storescp(tmp_path / "out", "--ignore") as port:
        results = send_files(files, Peer("STORESCP", "127.0.0.1", port), "SCU", on_result=remove_the_second)
    assert [(r.status, r.error) for r in results] == [
        (0, ""),
        (None, "not sent: cannot read: No such file or directory"),
        (0, ""),
    ]
