"""``dicom-node echo`` and ``dicom-node send`` against a running node and dcmtk storescp."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.cli import main
from tests.support.instances import dcmtk_storescp, make_ct, write_series
from tests.support.scp import Node, running_node
from tests.support.tools import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running_node(tmp_path / "storage") as n:
        yield n


def test_echo_ok(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", f"SECOND@127.0.0.1:{node.port}", "--calling-ae", "TESTER"]) == 0
    out = capsys.readouterr().out
    assert f"C-ECHO SECOND@127.0.0.1:{node.port}: 0x0000 Success" in out


def test_echo_rejected_says_why(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", f"WRONG@127.0.0.1:{node.port}"]) == 1
    err = capsys.readouterr().err
    assert "FAILED C-ECHO to WRONG@" in err and "Called AE title not recognised" in err


def test_echo_bad_peer_string(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", "no-at-sign:104"]) == 2
    assert "expected AE@HOST:PORT" in capsys.readouterr().err


@pytest.mark.dcmtk
def test_send_folder_recursively_to_storescp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_series(tmp_path / "in" / "a", 2)
    write_series(tmp_path / "in" / "b" / "c", 2)
    out = tmp_path / "out"
    with dcmtk_storescp(out) as port:
        code = main(["send", str(tmp_path / "in"), "--to", f"STORESCP@127.0.0.1:{port}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "FAILED" not in captured.err
    assert captured.out.startswith("4 sent, 0 failed, ") and captured.out.rstrip().endswith(
        f"to STORESCP@127.0.0.1:{port}"
    )
    assert len(list(out.iterdir())) == 4


def _dicomdir(path: Path) -> None:
    """A minimal file with the DICOMDIR SOP class in its file meta."""
    ds = Dataset()
    ds.FileSetID = "TEST"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def test_send_sums_up_failures_per_kind_and_skips_what_is_not_an_instance(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_series(tmp_path / "in", 2)
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    _dicomdir(tmp_path / "in" / "DICOMDIR")
    for name in ("mismatch1.dcm", "mismatch2.dcm"):
        mismatch = make_ct()
        mismatch.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        mismatch.preamble = b"\x00" * 128
        mismatch.save_as(tmp_path / "in" / name, enforce_file_format=False)

    code = main(
        ["send", str(tmp_path / "in"), str(tmp_path / "missing.dcm"), "--to", f"NNUNET@127.0.0.1:{node.port}"]
    )

    captured = capsys.readouterr()
    assert code == 1
    failures = [line for line in captured.err.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 3, captured.err  # missing path (named at once), one line for both 0xA900
    assert any("missing.dcm: no such file" in f for f in failures)
    assert any(f.startswith("FAILED 2 file(s): 0xA900") and "mismatch" in f for f in failures)
    assert any(f == "FAILED 1 path(s): no such file or folder" for f in failures)
    assert captured.out.startswith("2 sent, 3 failed, 2 skipped (DICOMDIR or not DICOM), ")
    assert len(node.spool_files()) == len(good)


def test_send_verbose_names_every_failed_file(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("mismatch1.dcm", "mismatch2.dcm"):
        mismatch = make_ct()
        mismatch.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        mismatch.preamble = b"\x00" * 128
        mismatch.save_as(folder / name, enforce_file_format=False)
    assert main(["send", str(folder), "-v", "--to", f"NNUNET@127.0.0.1:{node.port}"]) == 1
    err = capsys.readouterr().err
    assert all(f"FAILED {folder / n}: 0xA900" in err for n in ("mismatch1.dcm", "mismatch2.dcm"))


def test_ctrl_c_stops_send_and_says_what_was_sent(tmp_path: Path) -> None:
    """A peer that stops answering after 3 instances; SIGINT then: the 3 acknowledged are reported."""
    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt

    write_series(tmp_path / "in", 8)
    seen: list[str] = []
    release = threading.Event()

    def handle(event: Any) -> int:
        seen.append(str(event.request.AffectedSOPInstanceUID))
        if len(seen) > 3:
            release.wait(30)
        return 0

    old = _config.UNRESTRICTED_STORAGE_SERVICE
    _config.UNRESTRICTED_STORAGE_SERVICE = False
    scp = AE(ae_title="SLOW")
    scp.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicom_node.cli",
                "send",
                str(tmp_path / "in"),
                "--associations",
                "1",  # one after the other: exactly 3 answered when the 4th is held
                "--to",
                f"SLOW@127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        wait_for(lambda: len(seen) > 3, timeout=60, what="the 4th instance held by the peer")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        release.set()
        server.shutdown()
        _config.UNRESTRICTED_STORAGE_SERVICE = old
    assert proc.returncode == 130, err
    assert out.startswith("interrupted after 3 of 8 files: 3 sent, 0 failed, "), out
    assert "Traceback" not in err


def test_console_script_entry_point(node: Node, tmp_path: Path) -> None:
    """The installed command line, as a user runs it."""
    files = write_series(tmp_path / "in", 1)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicom_node.cli",
            "send",
            str(files[0]),
            "--to",
            f"NNUNET@127.0.0.1:{node.port}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1 sent, 0 failed")
    assert node.journal.counts().instances == 1
    assert node.journal.instances_of_series(node.instances[0])[0].calling_ae == "STORESCU"
