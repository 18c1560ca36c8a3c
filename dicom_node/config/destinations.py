"""The DICOM peers that receive results, and how sending to them backs off."""

from __future__ import annotations

from pydantic import Field, field_validator

from dicom_node.config.base import AETitle, Strict
from dicom_node.net.ae_titles import check_ae_title
from dicom_node.net.peers import is_valid_host
from dicom_node.net.tls import ClientTls


class DestinationConfig(Strict):
    """A DICOM peer that receives our results."""

    ae_title: AETitle
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    calling_ae: AETitle | None = Field(
        default=None, description="our AE title towards this peer; default: the node's first"
    )
    timeout_seconds: float = Field(default=30.0, gt=0)
    tls: ClientTls | None = Field(default=None, description="DICOM TLS towards this peer")

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        if not is_valid_host(value):
            raise ValueError(f"invalid host {value!r}: a host name, an IPv4 address or [IPv6]")
        return value

    @field_validator("ae_title", "calling_ae")
    @classmethod
    def _valid_ae(cls, value: str | None) -> str | None:
        return None if value is None else check_ae_title(value)


class SendingSection(Strict):
    backoff_initial_seconds: float = Field(default=2.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    give_up_after_hours: float = Field(default=72.0, gt=0)
