"""Helpers shared by tests: free ports, real peer tools (dcmtk, dicom3tools), polling."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

# dcmtk by absolute path: the venv's pynetdicom installs console scripts with the same names.
DCMTK_BIN = Path("/usr/bin")


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk(tool: str) -> str:
    """Absolute path of a dcmtk tool; skips the test if dcmtk is not installed."""
    path = DCMTK_BIN / tool
    if not path.exists():
        pytest.skip(f"dcmtk {tool} not installed")
    return str(path)


def peer_env() -> dict[str, str]:
    """Environment for dcmtk/Orthanc processes: TCP_NODELAY=1 avoids a ~40 ms Nagle stall."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


@dataclass(frozen=True)
class DciodvfyReport:
    returncode: int
    errors: list[str]
    warnings: list[str]
    output: str


def dciodvfy(path: Path) -> DciodvfyReport:
    """Run dicom3tools' dciodvfy on a file and collect its error and warning lines."""
    exe = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
    if not Path(exe).exists():
        pytest.skip("dciodvfy (dicom3tools) not installed")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    errors = [ln for ln in text.splitlines() if ln.startswith("Error")]
    warnings = [ln for ln in text.splitlines() if ln.startswith("Warning")]
    return DciodvfyReport(proc.returncode, errors, warnings, text)


def wait_for(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or check}")
        time.sleep(interval)
