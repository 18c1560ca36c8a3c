"""``dicom-node echo`` and ``dicom-node send`` against a running node and dcmtk storescp."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_node.cli import main
from tests.support.instances import dcmtk_storescp, make_ct, write_series
from tests.support.scp import Node, running_node

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


def test_send_reports_each_failure_and_exits_1(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_series(tmp_path / "in", 2)
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    mismatch = make_ct()
    mismatch.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    mismatch.preamble = b"\x00" * 128
    mismatch.save_as(tmp_path / "in" / "mismatch.dcm", enforce_file_format=False)

    code = main(
        ["send", str(tmp_path / "in"), str(tmp_path / "missing.dcm"), "--to", f"NNUNET@127.0.0.1:{node.port}"]
    )

    captured = capsys.readouterr()
    assert code == 1
    failures = [line for line in captured.err.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 3, captured.err
    assert any("missing.dcm: no such file" in f for f in failures)
    assert any("notes.txt: not sent: not a DICOM Part 10 file" in f for f in failures)
    assert any("mismatch.dcm: 0xA900" in f for f in failures)
    assert captured.out.startswith("2 sent, 3 failed, ")
    assert len(node.spool_files()) == len(good)


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
