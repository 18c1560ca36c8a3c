"""A local Ray cluster for tests: ``ray start --head`` plus worker nodes, CPU only, small object
store, no dashboard, no usage stats; each ``ray start --block`` runs in its own session, so the
test ends exactly the processes it started (with their workers and actors), by session id."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.tools import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
OBJECT_STORE_BYTES = 100 * 1024 * 1024


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # workers import this checkout's inference package (actors are pickled by reference)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (a ``ray start`` we launched with its own session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def _cmdline(pid: int) -> str:
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


@dataclass
class RayCluster:
    """``address``: the GCS ``host:port`` the node connects to (the same after :meth:`restart`)."""

    temp_dir: Path
    port: int
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.temp_dir.parent / log_name, "ab")  # noqa: SIM115 - handed to the process
        process = subprocess.Popen(
            [
                str(RAY),
                "start",
                "--block",
                "--num-cpus=1",
                f"--object-store-memory={OBJECT_STORE_BYTES}",
                *args,
            ],
            env=ray_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.nodes.append(process)
        return process

    def start_head(self) -> None:
        self._start(
            [
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            "head.log",
        )

    def add_worker(self) -> subprocess.Popen[bytes]:
        return self._start([f"--address={self.address}"], "worker.log")

    def wait_nodes(self, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` nodes are alive (``ray status`` lists them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = subprocess.run(
                [str(RAY), "status", f"--address={self.address}"],
                env=ray_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            if proc.returncode == 0 and proc.stdout.count("node_") >= count:
                return
            time.sleep(1.0)
        pytest.fail(f"the Ray cluster did not reach {count} node(s) within {timeout:.0f} s")

    def actor_pids(self, method: str = "") -> list[int]:
        """Processes of our predictor actors (on any of our nodes); with ``method``, only those
        running it now (Ray titles an actor's process ``ray::Class.method`` during a call)."""
        title = "ray::PredictorActor" + (f".{method}" if method else "")
        return [
            pid for node in self.nodes for pid in _session_pids(node.pid) if _cmdline(pid).startswith(title)
        ]

    def kill_node(self, process: subprocess.Popen[bytes]) -> None:
        """End one node and everything it started: SIGTERM (ray cleans up), then SIGKILL."""
        sid = process.pid
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        deadline = time.monotonic() + 10
        while _session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process in self.nodes:
            self.nodes.remove(process)

    def stop(self) -> None:
        for process in reversed(list(self.nodes)):
            self.kill_node(process)

    def restart(self, workers: int = 1) -> None:
        self.stop()
        self.start_head()
        for _ in range(workers):
            self.add_worker()
        self.wait_nodes(1 + workers)


def start_cluster(workers: int = 1) -> RayCluster:
    """Head plus ``workers`` worker nodes, one CPU each. The temp folder is short: Ray's socket
    paths must fit in 107 bytes."""
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    cluster = RayCluster(temp_dir=temp / "ray", port=free_port())
    cluster.temp_dir.mkdir()
    try:
        cluster.restart(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def remove_cluster(cluster: RayCluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.temp_dir.parent, ignore_errors=True)
