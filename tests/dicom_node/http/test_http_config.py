"""The ``http:`` and ``logging:`` sections are validated when the config loads: nothing accepted here
fails later for a reason known at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dicom_node.config import config_from_mapping
from dicom_node.errors import ConfigError


def load(tmp_path: Path, **sections: Any) -> Any:
    return config_from_mapping(
        {"node": {"storage_dir": str(tmp_path / "var")}, **sections}, base_dir=tmp_path
    )


def test_no_http_section_means_no_http_server(tmp_path: Path) -> None:
    assert load(tmp_path).http is None


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "imports").mkdir()
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    cfg = load(tmp_path, http={"import_root": "imports", "tls_cert": "cert.pem", "tls_key": "key.pem"})
    assert cfg.http.import_root == tmp_path / "imports"
    assert cfg.http.tls_cert == tmp_path / "cert.pem"


@pytest.mark.parametrize(
    ("http", "words"),
    [
        ({"token": "short"}, "http.token"),
        ({"tls_cert": "cert.pem"}, "tls_cert and tls_key"),
        ({"tls_cert": "missing.pem", "tls_key": "missing.pem"}, "is not a file"),
        ({"import_root": "nowhere"}, "is not a folder"),
        ({"port": 70000}, "http.port"),
        ({"orthanc": {"url": "orthanc:8042"}}, "http.orthanc.url"),
        ({"orthanc": {"url": "http://pacs:8042", "username": "u"}}, "username and password"),
        ({"max_upload_mb": 0}, "http.max_upload_mb"),
        ({"download_days": 3}, "unknown key"),
    ],
)
def test_a_bad_http_section_is_refused_at_load(tmp_path: Path, http: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load(tmp_path, http=http)


def test_logging_format_is_text_or_json(tmp_path: Path) -> None:
    assert load(tmp_path, logging={"format": "json"}).logging.format == "json"
    with pytest.raises(ConfigError, match=r"logging\.format"):
        load(tmp_path, logging={"format": "xml"})
