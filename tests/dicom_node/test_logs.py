"""Log formats: a JSON line per record carrying the hop fields, and neither format lets a peer's text
(an AE title, a series description) forge a line or carry a terminal escape."""

from __future__ import annotations

import json
import logging

import pytest

from dicom_node.logs import JsonFormatter, configure_logging

HOSTILE = "CT\nFAKE  ERROR  forged line\x1b[31m\u202e"


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("dicom_node.test", logging.INFO, __file__, 1, "series %s", (message,), None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_carries_the_hop_fields_and_stays_one_line() -> None:
    line = JsonFormatter().format(_record(HOSTILE, job_id=7, series_uid="1.2.3", ms=12))
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line
    data = json.loads(line)
    assert data["message"] == f"series {HOSTILE}"
    assert (data["job_id"], data["series_uid"], data["ms"], data["level"]) == (7, "1.2.3", 12, "INFO")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_configured_handlers_escape_peer_text(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", fmt)  # type: ignore[arg-type]
        logging.getLogger("dicom_node.test").info("series %s", HOSTILE)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\u202e" not in err
