"""Orthanc as a real PACS peer for tests: started with its own JSON config in a temp dir, on free HTTP
and DICOM ports, with ``TCP_NODELAY=1``; REST helpers to upload, list and push studies.

Use the ``orthanc_factory`` fixture (import it into the test module, or from a conftest)::

    def test_x(orthanc_factory):
        pacs = orthanc_factory(modalities={"node": Modality("NNUNET", "127.0.0.1", node_port)})
        pacs.upload(path)
        pacs.push("node", study_id)
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import free_port, peer_env, wait_for

ORTHANC_BIN = Path("/usr/sbin/Orthanc")


@dataclass(frozen=True)
class Modality:
    """A DICOM peer Orthanc knows (``DicomModalities`` entry)."""

    ae_title: str
    host: str
    port: int

    def as_json(self) -> dict[str, Any]:
        return {"AET": self.ae_title, "Host": self.host, "Port": self.port}


class OrthancError(RuntimeError):
    """Orthanc answered a REST call with an error, or did not start."""


@dataclass
class OrthancServer:
    """A running Orthanc process and a small REST client for it."""

    workdir: Path
    http_port: int
    dicom_port: int
    ae_title: str
    process: subprocess.Popen[bytes]
    log_path: Path
    modalities: dict[str, Modality] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # --- REST --------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 60.0,
    ) -> Any:
        """One REST call; returns the decoded JSON answer (or None for an empty body)."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise OrthancError(f"Orthanc {method} {path}: HTTP {exc.code}: {detail}") from exc
        return json.loads(data) if data.strip() else None

    def get(self, path: str, timeout: float = 60.0) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post_json(self, path: str, payload: Any, timeout: float = 60.0) -> Any:
        return self.request("POST", path, json.dumps(payload).encode(), timeout=timeout)

    # --- helpers -----------------------------------------------------------------------------------
    def upload(self, path: Path) -> dict[str, Any]:
        """Store one DICOM file over REST (``POST /instances``); returns Orthanc's answer
        (``ID``, ``ParentStudy``, ``ParentSeries``, ``Status``)."""
        answer = self.request("POST", "/instances", Path(path).read_bytes(), "application/dicom")
        if not isinstance(answer, dict) or answer.get("Status") not in {"Success", "AlreadyStored"}:
            raise OrthancError(f"upload of {path} failed: {answer}")
        return answer

    def upload_all(self, paths: list[Path]) -> list[dict[str, Any]]:
        return [self.upload(p) for p in paths]

    def studies(self) -> list[str]:
        """Orthanc ids of all studies."""
        return list(self.get("/studies"))

    def series_of_study(self, study_id: str) -> list[dict[str, Any]]:
        """Expanded series of a study (``MainDicomTags``, ``Instances``, ...)."""
        return list(self.get(f"/studies/{study_id}/series"))

    def instances_of_series(self, series_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/series/{series_id}/instances"))

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """``/instances/{id}/simplified-tags``: keyword -> value."""
        return dict(self.get(f"/instances/{instance_id}/simplified-tags"))

    def instance_file(self, instance_id: str) -> bytes:
        req = urllib.request.Request(f"{self.url}/instances/{instance_id}/file")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return bytes(resp.read())

    def lookup(self, uid: str) -> list[dict[str, Any]]:
        """Orthanc resources whose DICOM UID is ``uid`` (``POST /tools/lookup``)."""
        return list(self.request("POST", "/tools/lookup", uid.encode(), "text/plain"))

    def study_id(self, study_uid: str) -> str | None:
        hits = [h for h in self.lookup(study_uid) if h.get("Type") == "Study"]
        return str(hits[0]["ID"]) if hits else None

    def add_modality(self, name: str, modality: Modality) -> None:
        """Declare (or replace) a DICOM peer at run time (``PUT /modalities/{name}``)."""
        self.request("PUT", f"/modalities/{name}", json.dumps(modality.as_json()).encode())
        self.modalities[name] = modality

    def push(self, modality: str, resource_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """C-STORE a patient/study/series/instance to a declared modality, waiting for the job to end
        (``POST /modalities/{name}/store`` with ``Synchronous: true``)."""
        payload = {"Resources": [resource_id], "Synchronous": True}
        answer = self.post_json(f"/modalities/{modality}/store", payload, timeout=timeout)
        return dict(answer or {})

    def echo(self, modality: str) -> bool:
        try:
            self.request("POST", f"/modalities/{modality}/echo", b"{}")
        except OrthancError:
            return False
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- life cycle --------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def orthanc_config(
    workdir: Path,
    http_port: int,
    dicom_port: int,
    ae_title: str,
    modalities: Mapping[str, Modality],
    stable_age: int,
) -> dict[str, Any]:
    """The JSON configuration of a throw-away test Orthanc."""
    storage = workdir / "db"
    return {
        "Name": f"test-orthanc-{dicom_port}",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {name: m.as_json() for name, m in modalities.items()},
        "DicomModalitiesInDatabase": False,
        "DicomScuTimeout": 30,
        # Release our SCU associations at once instead of keeping them open 5 s for reuse.
        "DicomAssociationCloseDelay": 0,
        "StableAge": stable_age,
        "SaveJobs": False,
        "TcpNoDelay": True,
        "HttpThreadsCount": 8,
        "DicomThreadsCount": 4,
        "ConcurrentJobs": 2,
        "MetricsEnabled": False,
    }


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_orthanc(
    workdir: Path,
    *,
    modalities: Mapping[str, Modality] | None = None,
    ae_title: str = "ORTHANC",
    stable_age: int = 1,
    startup_timeout: float = 60.0,
) -> OrthancServer:
    """Start ``/usr/sbin/Orthanc`` with its own config under ``workdir`` and wait until its REST API
    answers and its DICOM port accepts connections. Skips the test when Orthanc is not installed."""
    if not ORTHANC_BIN.exists():
        pytest.skip(f"Orthanc not installed ({ORTHANC_BIN})")
    workdir.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    dicom_port = free_port()
    while dicom_port == http_port:
        dicom_port = free_port()
    mods = dict(modalities or {})
    config = orthanc_config(workdir, http_port, dicom_port, ae_title, mods, stable_age)
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = workdir / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ORTHANC_BIN), str(config_path)],
            cwd=workdir,
            env=peer_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = OrthancServer(workdir, http_port, dicom_port, ae_title, process, log_path, mods)

    def ready() -> bool:
        if process.poll() is not None:
            raise OrthancError(f"Orthanc exited with {process.returncode}:\n{server.log_tail()}")
        try:
            server.get("/system", timeout=2.0)
        except (OSError, OrthancError):
            return False
        return _port_open(dicom_port)

    try:
        wait_for(ready, timeout=startup_timeout, interval=0.1, what="Orthanc REST and DICOM ports")
    except BaseException:
        server.stop()
        raise
    return server


OrthancFactory = Callable[..., OrthancServer]


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[OrthancFactory]:
    """A factory that starts Orthanc instances (see :func:`start_orthanc`); all are stopped at the end
    of the test."""
    started: list[OrthancServer] = []

    def factory(**kwargs: Any) -> OrthancServer:
        server = start_orthanc(tmp_path / f"orthanc-{len(started)}", **kwargs)
        started.append(server)
        return server

    yield factory
    stop_all(started)


def stop_all(servers: list[OrthancServer]) -> None:
    """Stop several servers at once (each takes a few seconds to shut down)."""
    for server in servers:
        if server.process.poll() is None:
            server.process.terminate()
    for server in servers:
        server.stop()
