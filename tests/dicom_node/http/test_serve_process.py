"""``dicom-node serve`` as a real process with an ``http:`` section: the HTTP server comes up beside
the SCP and goes down on SIGTERM; ``logging.format: json`` gives one JSON object per line;
``--log-level`` works after the subcommand; ``--version`` answers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.support.node_process import REPO_ROOT
from tests.support.tools import peer_env


def test_serve_runs_http_beside_the_scp_with_json_logs(tmp_path: Path) -> None:
    config = {
        "node": {"ae_title": "NNUNET", "host": "127.0.0.1", "port": 0, "storage_dir": str(tmp_path / "var")},
        "http": {"host": "127.0.0.1", "port": 0},
        "logging": {"format": "json", "level": "WARNING"},
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(path), "--log-level", "DEBUG"],
            cwd=REPO_ROOT,
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert process.stdout is not None
        port = None
        for line in process.stdout:  # the process prints these two lines once both servers listen
            m = re.search(r"http on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m[1])
                break
        assert port is not None, log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log.read_text()
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert "DEBUG" in {r["level"] for r in records}  # the command line's level wins over the config's
    assert any("HTTP API on" in r["message"] for r in records)


def test_version_is_printed(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "--version"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and re.fullmatch(r"dicom-node \S+\n", out.stdout)
