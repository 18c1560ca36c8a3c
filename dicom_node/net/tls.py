"""DICOM TLS (PS3.15 secure transport connection profiles) for the SCP and towards destinations.

The node's listening side (``node.tls``) presents a server certificate; with ``ca_certificates`` it
verifies client certificates, and with ``require_client_certificate`` a client without one that
chains to those CAs is refused during the handshake. A destination's ``tls`` verifies the peer's
certificate (against ``ca_certificates``, or the system's CAs) and its host name unless
``verify_hostname: false``, and presents a client certificate when one is given. Both sides speak
TLS 1.2 or newer only. Files are read and the contexts built when the configuration loads, so a
missing or mismatched key is a configuration error, not a failed association later.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from dicom_node.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerTls(_Strict):
    """``node.tls``: TLS on the SCP."""

    certificate: Path  # PEM: the node's certificate (chain)
    private_key: Path  # PEM, unencrypted
    ca_certificates: Path | None = None  # PEM bundle: verify client certificates against these
    require_client_certificate: bool = False

    @model_validator(mode="after")
    def _needs_cas(self) -> ServerTls:
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("require_client_certificate needs ca_certificates to verify them against")
        return self

    def resolved(self, base: Path) -> ServerTls:
        return self.model_copy(
            update={
                "certificate": base / self.certificate,
                "private_key": base / self.private_key,
                "ca_certificates": None if self.ca_certificates is None else base / self.ca_certificates,
            }
        )


class ClientTls(_Strict):
    """A destination's ``tls``: TLS when the node sends to it."""

    ca_certificates: Path | None = None  # PEM bundle the peer's certificate must chain to (None: system)
    certificate: Path | None = None  # our client certificate, when the peer asks for one
    private_key: Path | None = None
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> ClientTls:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        return self

    def resolved(self, base: Path) -> ClientTls:
        def at(p: Path | None) -> Path | None:
            return None if p is None else base / p

        return self.model_copy(
            update={
                "ca_certificates": at(self.ca_certificates),
                "certificate": at(self.certificate),
                "private_key": at(self.private_key),
            }
        )


def server_context(tls: ServerTls) -> ssl.SSLContext:
    """The SCP's context; raises :class:`ConfigError` if a file cannot be used."""
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(tls.certificate, tls.private_key)
        if tls.ca_certificates is not None:
            ctx.load_verify_locations(cafile=tls.ca_certificates)
            ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        else:
            ctx.verify_mode = ssl.CERT_NONE
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"node.tls: {exc}") from exc
    return ctx


def client_context(tls: ClientTls, where: str) -> ssl.SSLContext:
    """A destination's context; raises :class:`ConfigError` naming ``where`` if a file cannot be used."""
    try:
        ctx = ssl.create_default_context(
            cafile=None if tls.ca_certificates is None else str(tls.ca_certificates)
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = tls.verify_hostname
        if tls.certificate is not None and tls.private_key is not None:
            ctx.load_cert_chain(tls.certificate, tls.private_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}.tls: {exc}") from exc
    return ctx
