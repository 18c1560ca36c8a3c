"""Log output of the ``dicom-node`` command: text (default) or JSON lines (``logging.format: json``).

Only entry points call :func:`configure_logging`. In JSON each record is one object per line with
``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and the hop fields a record carries
(``extra=``): ``job_id``, ``series_uid``, ``calling_ae``, ``called_ae``, ``destination``, ``ms``...,
so a log pipeline can follow one series through the node. Records carry UIDs and AE titles, never
patient names.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Literal

from dicom_node import textsafe

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: Libraries that log routine steps at INFO (highdicom: one line per copied module).
NOISY = ("pynetdicom", "PIL", "matplotlib", "watchdog", "highdicom", "nnunetv2", "uvicorn", "httpx")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


HANDLER_NAME = "dicom-node-stderr"


def configure_logging(level: str, fmt: Literal["text", "json"] = "text") -> None:
    """(Re)configure the root logger: one stderr handler in the given format."""
    handler = logging.StreamHandler(sys.stderr)
    # peers' text (AE titles, descriptions...) cannot forge lines or escapes: JSON escapes control
    # characters itself (ensure_ascii), text goes through textsafe's escaping formatter
    handler.setFormatter(JsonFormatter() if fmt == "json" else textsafe.EscapingFormatter(TEXT_FORMAT))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == HANDLER_NAME:  # ours from an earlier call; others' handlers stay
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))
