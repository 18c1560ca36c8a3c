"""The ``dicom-node`` entry point: every command module is registered and listed in the help, unknown
or missing commands exit 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import dicom_node.commands
from dicom_node import cli

COMMANDS = [
    "serve",
    "demo",
    "predict",
    "echo",
    "send",
    "status",
    "config",
    "rules",
    "retry",
    "resend",
    "rerun",
    "journal",
]


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_every_command_module_is_registered() -> None:
    folder = Path(dicom_node.commands.__file__).parent
    on_disk = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    assert on_disk == set(cli.COMMAND_MODULES)
    assert subcommands(cli.build_parser()) == COMMANDS


def test_console_script_help_lists_every_command() -> None:
    [entry] = [e for e in entry_points(group="console_scripts") if e.name == "dicom-node"]
    assert entry.value == "dicom_node.cli:main"
    exe = Path(sys.executable).parent / "dicom-node"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = [
        line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ") and line.split()
    ]
    assert [name for name in listed if name in COMMANDS] == COMMANDS
    assert "--log-level" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: dicom-node {command}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
        (["--log-level", "LOUD", "status"], "invalid choice: 'LOUD'"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dicom-node") and message in err


def test_unknown_command_exits_2_from_the_shell() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "frobnicate"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr and proc.stdout == ""


def test_exit_code_comes_from_the_command_and_ctrl_c_is_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    def parser_with(func: object) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="dicom-node")
        parser.add_argument("--log-level", default="WARNING")
        parser.set_defaults(func=func)
        return parser

    monkeypatch.setattr(cli, "build_parser", lambda *_: parser_with(lambda _a: 3))
    assert cli.main([]) == 3
    monkeypatch.setattr(cli, "build_parser", lambda *_: parser_with(interrupted))
    assert cli.main([]) == 130
