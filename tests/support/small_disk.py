"""Run a Python probe with a real, small filesystem: a tmpfs of a given size mounted in a private
user+mount namespace (``unshare -Urm``), so writes there hit a real ENOSPC. Skips the calling test where
namespaces or tmpfs mounts are not allowed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_on_small_tmpfs(tmp_path: Path, size: str, probe: str) -> Any:
    """Mount a tmpfs of ``size`` (e.g. ``"256k"``), run ``probe`` (Python source) with the mount point as
    ``sys.argv[1]`` and return the JSON it printed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare not available")
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = f'mount -t tmpfs -o size={size} tmpfs "$1" && exec "{sys.executable}" -c "$2" "$1"'
    proc = subprocess.run(
        [unshare, "-Urm", "sh", "-c", script, "sh", str(mnt), probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    if proc.returncode != 0 and "mount" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
