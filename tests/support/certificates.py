"""Certificates for DICOM TLS tests, made with openssl in the test: a CA, a server certificate for
127.0.0.1/localhost and a client certificate it signed, and a self-signed client certificate no CA
vouches for."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Pair
    client: Pair
    rogue: Pair  # self-signed: not issued by ``ca``

    def node_tls(self) -> dict[str, object]:
        """The ``node.tls`` section of a node that serves with the server certificate and asks its
        peers for a certificate issued by the CA."""
        return {
            "certificate": str(self.server.certificate),
            "private_key": str(self.server.key),
            "ca_certificates": str(self.ca),
            "require_client_certificate": True,
        }


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _issued(folder: Path, name: str, ca: Pair, subject: str, extensions: str) -> Pair:
    key, csr, cert, ext = (folder / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.certificate), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return Pair(cert, key)


def _self_signed(folder: Path, name: str, subject: str) -> Pair:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
        "-days", "2", "-subj", subject,
    )  # fmt: skip
    return Pair(cert, key)


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _self_signed(folder, "ca", "/CN=dicom-node test CA")
    server = _issued(
        folder, "server", ca, "/CN=localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )  # fmt: skip
    client = _issued(folder, "client", ca, "/CN=modality", "extendedKeyUsage=clientAuth\n")
    rogue = _self_signed(folder, "rogue", "/CN=modality")
    return Pki(ca.certificate, server, client, rogue)
