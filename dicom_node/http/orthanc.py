"""A small client of Orthanc's REST API for ``POST /infer_orthanc``: download a series as a zip
archive, upload a DICOM file. Standard library only (urllib); HTTP basic auth when configured."""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dicom_node.config import OrthancSection
from dicom_node.errors import NodeError

logger = logging.getLogger(__name__)

# Orthanc resource ids: SHA-1 based, 5 groups of 8 hex digits
_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


class OrthancClientError(NodeError):
    """Orthanc refused a request or could not be reached; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def check_series_id(value: str) -> str:
    if not _ORTHANC_ID.fullmatch(value):
        raise ValueError(f"not an Orthanc series id: {value!r}")
    return value


class OrthancClient:
    def __init__(self, settings: OrthancSection) -> None:
        self.url = settings.url.rstrip("/")
        self.timeout = settings.timeout_seconds
        self._auth: str | None = None
        if settings.username is not None and settings.password is not None:
            raw = f"{settings.username}:{settings.password}".encode()
            self._auth = "Basic " + base64.b64encode(raw).decode()

    def _request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if self._auth:
            req.add_header("Authorization", self._auth)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace")
            raise OrthancClientError(f"Orthanc {method} {path}: HTTP {exc.code}: {detail}", exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise OrthancClientError(f"Orthanc {method} {path}: {exc}") from exc

    def download_series(self, series_id: str, target: Path, *, max_bytes: int) -> Path:
        """The series' zip archive (``GET /series/{id}/archive``) written to ``target``."""
        check_series_id(series_id)
        written = 0
        with self._request("GET", f"/series/{series_id}/archive") as resp, target.open("wb") as out:
            while chunk := resp.read(1024 * 1024):
                written += len(chunk)
                if written > max_bytes:
                    raise OrthancClientError(
                        f"series {series_id}: archive larger than {max_bytes} bytes", 413
                    )
                out.write(chunk)
        return target

    def upload(self, path: Path) -> dict[str, Any]:
        """Store a DICOM file (``POST /instances``); Orthanc's answer (ID, ParentSeries, Status)."""
        with self._request("POST", "/instances", path.read_bytes(), "application/dicom") as resp:
            answer = json.loads(resp.read() or b"{}")
        if not isinstance(answer, dict):
            raise OrthancClientError(f"unexpected answer to the upload of {path.name}: {answer}")
        return answer
