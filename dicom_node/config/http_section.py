"""The HTTP API section (and the Orthanc server it reads from)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from dicom_node.config.base import Strict


class OrthancSection(Strict):
    """An Orthanc server that ``POST /infer_orthanc`` reads series from and stores SEGs back to."""

    url: str = Field(pattern=r"^https?://[^/\s]+(/.*)?$", description="e.g. http://orthanc:8042")
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> OrthancSection:
        if (self.username is None) != (self.password is None):
            raise ValueError("orthanc: give both username and password, or neither")
        return self


class HttpSection(Strict):
    """The HTTP API, dashboard and metrics, served beside the SCP (no section: no HTTP server)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: str | None = Field(
        default=None,
        min_length=16,
        description="bearer token required by the endpoints that change something",
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_upload_mb: int = Field(default=2048, ge=1, le=65536, description="largest accepted upload")
    max_unpacked_mb: int = Field(
        default=8192, ge=1, le=262144, description="largest total size an upload may unpack to"
    )
    max_upload_files: int = Field(default=20000, ge=1, le=1_000_000)
    import_root: Path | None = Field(
        default=None, description="POST /infer reads series_folders only under this folder"
    )
    orthanc: OrthancSection | None = None
    job_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="how long /infer* waits for its job before answering 504"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("http: give both tls_cert and tls_key, or neither")
        return self
