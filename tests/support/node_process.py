"""``dicom-node serve --config`` as a real subprocess for end-to-end tests: start it, learn its port from
its ``listening on AE@HOST:PORT`` line, stop it with SIGTERM and get its exit code."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from tests.support.tools import peer_env

REPO_ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (?P<ae>[^@]+)@(?P<host>[^:]+):(?P<port>\d+)")


@dataclass
class NodeProcess:
    process: subprocess.Popen[str]
    ae_title: str
    host: str
    port: int
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills it after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _read_until_listening(stream: IO[str], out: queue.Queue[str | None]) -> None:
    """Forward stdout lines until the listening line; None marks the end of the stream."""
    for line in stream:
        out.put(line)
        if _LISTENING.search(line):
            return
    out.put(None)


def start_node(
    config_path: Path, *, log_path: Path, startup_timeout: float = 120.0, env: dict[str, str] | None = None
) -> NodeProcess:
    """Start ``python -m dicom_node.cli serve --config config_path``; stderr goes to ``log_path``;
    ``env`` adds to the environment."""
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(config_path)],
        cwd=REPO_ROOT,
        env={**peer_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    log.close()
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_until_listening, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=startup_timeout)
            except queue.Empty:
                raise RuntimeError(f"node did not report listening within {startup_timeout:.0f} s") from None
            if line is None:
                break
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                return NodeProcess(process, match["ae"], match["host"], int(match["port"]), log_path)
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    process.wait(timeout=10)
    log_text = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"node exited with {process.returncode} before listening:\n{''.join(seen)}{log_text}")


@contextmanager
def running_node(config_path: Path, *, log_path: Path) -> Iterator[NodeProcess]:
    """A node subprocess for the ``with`` block; SIGTERM at the end."""
    node = start_node(config_path, log_path=log_path)
    try:
        yield node
    finally:
        node.stop()
