"""DICOM peers given as ``AE@HOST:PORT`` strings (command line, tests, destinations)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dicom_node.errors import ConfigError
from dicom_node.net.ae_titles import check_ae_title

if TYPE_CHECKING:
    import ssl

_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")


def is_valid_host(host: str) -> bool:
    """A host name, an IPv4 address or a bracketed IPv6 address (what a peer address may be)."""
    return bool(host) and _HOST_RE.match(host) is not None


@dataclass(frozen=True)
class Peer:
    """A remote application entity: AE title, host and TCP port."""

    ae_title: str
    host: str
    port: int
    tls: ssl.SSLContext | None = field(default=None, compare=False)  # DICOM TLS towards the peer

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not is_valid_host(self.host):
            raise ConfigError(f"invalid host {self.host!r} for peer {self.ae_title}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"invalid port {self.port} for peer {self.ae_title}: 1-65535")

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` for socket APIs (IPv6 brackets removed)."""
        return self.host.strip("[]"), self.port

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Peer:
        """Parse ``AE@HOST:PORT`` (IPv6 hosts in brackets: ``AE@[::1]:104``).

        Raises :class:`ConfigError` with the offending text."""
        ae, sep, rest = text.rpartition("@")
        host, colon, port_text = rest.rpartition(":")
        if not sep or not colon or not ae or not host:
            raise ConfigError(f"invalid peer {text!r}: expected AE@HOST:PORT")
        if not port_text.isdigit():
            raise ConfigError(f"invalid peer {text!r}: port {port_text!r} is not a number")
        return cls(ae_title=ae, host=host, port=int(port_text))
