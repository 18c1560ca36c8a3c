"""The listening side of the node: AE titles, port, limits, TLS, storage folder."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from dicom_node.config.base import AETitle, Strict
from dicom_node.net.ae_titles import check_ae_title
from dicom_node.net.tls import ServerTls
from inference.inflate_guard import DEFAULT_MAX_INFLATED_BYTES

IPNetwork = IPv4Network | IPv6Network  # an address is a network of one (10.0.0.5 = 10.0.0.5/32)


class NodeSection(Strict):
    """Listening side of the node."""

    ae_title: list[AETitle] = Field(default_factory=lambda: ["NNUNET"])
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    storage_dir: Path = Path("./var")
    allowed_calling_aes: list[AETitle] = Field(default_factory=list)
    max_associations: int = Field(default=10, ge=1, le=1000)
    max_pending_connections: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="connections that have not sent their association request yet, in total; more are"
        " closed at once",
    )
    max_pending_per_peer: int = Field(default=4, ge=1, le=1000, description="the same, from one peer address")
    acse_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="a connection's association request must be complete this long after connecting",
    )
    dimse_timeout_seconds: float = Field(default=30.0, gt=0)
    network_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="idle associations are aborted after this; a PDU must be complete this long after"
        " its first byte",
    )
    max_dataset_bytes: int = Field(
        default=DEFAULT_MAX_INFLATED_BYTES,
        ge=1024 * 1024,
        le=4 * 1024**3,
        description="largest data set a C-STORE may carry (a larger one aborts the association as it"
        " arrives); also the most a deflated instance may inflate to (refused with 0xA700 at receive,"
        " rejected from the drop folder, refused by series loading)",
    )
    max_pdu_bytes: int = Field(
        default=1_048_576,
        ge=4096,
        le=64 * 1024 * 1024,
        description="maximum PDU length we announce; larger incoming PDUs abort the association",
    )
    min_free_disk_mb: int = Field(
        default=1024, ge=0, description="below this free space C-STORE answers 0xA700"
    )
    fsync: bool = Field(default=True, description="fsync each received file and its directory")
    calling_ae_hosts: dict[AETitle, list[IPNetwork]] = Field(
        default_factory=dict,
        description="a calling AE listed here is accepted only from these addresses or networks",
    )
    tls: ServerTls | None = Field(default=None, description="DICOM TLS on the listening port")
    calling_ae_quota_mb: dict[AETitle, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="calling AE -> MB of kept spool data it may fill; beyond it C-STORE answers 0xA700",
    )
    storage_permissions: Literal["owner", "group"] = Field(
        default="owner",
        description="who may read the spool, outputs and journal: owner (files 0600, folders 0700)"
        " or group (0640/0750)",
    )
    retention_days: float = Field(default=7.0, gt=0)
    receive_processes: int = Field(
        default=1,
        ge=1,
        le=32,
        description="processes receiving on the port (the node accepts each connection and hands it to"
        " the one with the fewest open connections):"
        " parallel associations then add throughput beyond one Python process's; each process applies"
        " the association and pending-connection limits to the connections it gets",
    )

    @field_validator("ae_title", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("ae_title", "allowed_calling_aes")
    @classmethod
    def _valid_aes(cls, value: list[str]) -> list[str]:
        titles = [check_ae_title(v) for v in value]
        if len(set(titles)) != len(titles):
            raise ValueError("duplicate AE titles")
        return titles

    @field_validator("calling_ae_quota_mb")
    @classmethod
    def _quota_aes(cls, value: dict[str, float]) -> dict[str, float]:
        return {check_ae_title(ae): mb for ae, mb in value.items()}

    @field_validator("calling_ae_hosts")
    @classmethod
    def _hosts(cls, value: dict[str, list[IPNetwork]]) -> dict[str, list[IPNetwork]]:
        checked = {}
        for ae, networks in value.items():
            if not networks:
                raise ValueError(f"{ae}: at least one address or network")
            checked[check_ae_title(ae)] = networks
        return checked

    @field_validator("ae_title")
    @classmethod
    def _at_least_one(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one AE title is needed")
        return value

    @model_validator(mode="after")
    def _pending_limits(self) -> NodeSection:
        if self.max_pending_per_peer > self.max_pending_connections:
            raise ValueError("max_pending_per_peer cannot exceed max_pending_connections")
        return self

    @model_validator(mode="after")
    def _one_quota_count(self) -> NodeSection:
        if self.receive_processes > 1 and self.calling_ae_quota_mb:
            # each process would count its own filings between journal refreshes: a quota could be
            # passed by what the others filed meanwhile
            raise ValueError(
                "calling_ae_quota_mb needs receive_processes: 1 (quotas are counted in one process)"
            )
        return self
