"""``dicom-node send`` and ``echo`` start without loading what they do not use (the receiver, the journal,
the config models, inference, and pydicom and pynetdicom themselves): Python start-up is most of a
small send's time."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_node import cli
from tests.support.instances import dcmtk_storescp, write_series

NOT_FOR_SENDING = (
    "dicom_node.net.receive",
    "dicom_node.config",
    "dicom_node.storage.journal",
    "dicom_node.pipeline.worker",
    "pydantic",
    "torch",
)


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "folder", "--to", "PACS@127.0.0.1:104"],
        ["--log-level", "DEBUG", "send", "folder", "--to", "PACS@127.0.0.1:104"],
        ["--log-level=DEBUG", "echo", "PACS@127.0.0.1:104"],
    ],
)
def test_send_and_echo_start_without_the_server_modules(argv: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from dicom_node import cli\n"
        f"args = cli.build_parser({argv!r}).parse_args({argv!r})\n"
        "print(json.dumps([args.command, sorted(sys.modules)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    command, modules = json.loads(proc.stdout)
    assert command == next(a for a in argv if a in ("send", "echo"))
    assert [m for m in NOT_FOR_SENDING if m in modules] == []


@pytest.mark.dcmtk
@pytest.mark.parametrize("command", ["send", "echo"])
def test_send_and_echo_to_a_real_peer_import_neither_pydicom_nor_pynetdicom(
    tmp_path: Path, command: str
) -> None:
    """Their imports (~0.3 s) were most of a ``dicom-node send`` of a series: the sender, its file
    meta reader and the status words it prints on success need neither."""
    write_series(tmp_path / "in", 3)
    with dcmtk_storescp(tmp_path / "out", "--ignore") as port:
        peer = f"STORESCP@127.0.0.1:{port}"
        argv = ["send", str(tmp_path / "in"), "--to", peer] if command == "send" else ["echo", peer]
        code = (
            "import json, sys\n"
            "from dicom_node import cli\n"
            f"rc = cli.main({argv!r})\n"
            "print(json.dumps([rc, [m for m in ('pydicom', 'pynetdicom', 'numpy') if m in sys.modules]]))\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
        )
    assert proc.returncode == 0, proc.stderr
    rc, imported = json.loads(proc.stdout.splitlines()[-1])
    assert rc == 0, proc.stdout + proc.stderr
    assert imported == []


@pytest.mark.parametrize("command", ["retry", "config", "frobnicate", "--help"])
def test_commands_of_other_modules_and_unknown_words_still_find_their_parser(command: str) -> None:
    parser = cli.build_parser([command])
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if command in ("retry", "config"):
        assert command in sub.choices
    else:  # help and the "invalid choice" message list every command
        assert set(sub.choices) >= {"send", "serve", "retry", "config"}
