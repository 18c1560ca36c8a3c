"""HTTPS with the configured certificate, and the upload limit enforced on the bytes received when a
client declares no length (a chunked upload). A node with a random-weights model; no inference runs."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicom_node.config import config_from_mapping
from dicom_node.node import Node
from tests.dicom_node.http.conftest import AUTH, http_config
from tests.support.random_model import write_random_spec
from tests.support.tools import free_port

OPENSSL = Path("/usr/bin/openssl")


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[Node]:
    if not OPENSSL.exists():
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [str(OPENSSL), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run([*command, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    spec = write_random_spec(tmp_path, {"demo": {}})
    cfg = http_config(tmp_path, spec, free_port(), tls_cert=str(cert), tls_key=str(key), max_upload_mb=1)
    with Node(config_from_mapping(cfg, base_dir=tmp_path)) as node:
        yield node


def test_https_serves_with_the_configured_certificate(tls_node: Node, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{tls_node.http_port}"
    with httpx.Client(base_url=url, verify=trusting(tmp_path / "cert.pem"), timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.post("/jobs/1/retry").status_code == 401
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_node.http_port}/healthz", timeout=10)


def test_a_chunked_upload_over_the_limit_is_413(tls_node: Node, tmp_path: Path) -> None:
    def body() -> Iterator[bytes]:
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
        for _ in range(3):  # 3 MiB against a 1 MiB limit, no Content-Length
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--xyz--\r\n"

    url = f"https://127.0.0.1:{tls_node.http_port}/infer_file"
    headers = {"Content-Type": "multipart/form-data; boundary=xyz", **AUTH}
    r = httpx.post(url, content=body(), headers=headers, verify=trusting(tmp_path / "cert.pem"), timeout=30)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert not [p for p in (tls_node.storage_dir / "http-tmp").glob("*") if p.is_dir()]
