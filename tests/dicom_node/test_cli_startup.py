"""``dicom-node send`` and ``echo`` start without loading what they do not use (the receiver, the journal,
the config models, inference): Python start-up is most of a small send's time."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from dicom_node import cli

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
        "from dicom_node.process import configure_process\n"
        f"args = cli.build_parser({argv!r}).parse_args({argv!r})\n"
        "configure_process()\n"
        "print(json.dumps([args.command, sorted(sys.modules)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    command, modules = json.loads(proc.stdout)
    assert command == next(a for a in argv if a in ("send", "echo"))
    assert [m for m in NOT_FOR_SENDING if m in modules] == []


@pytest.mark.parametrize("command", ["retry", "config", "frobnicate", "--help"])
def test_commands_of_other_modules_and_unknown_words_still_find_their_parser(command: str) -> None:
    parser = cli.build_parser([command])
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if command in ("retry", "config"):
        assert command in sub.choices
    else:  # help and the "invalid choice" message list every command
        assert set(sub.choices) >= {"send", "serve", "retry", "config"}
