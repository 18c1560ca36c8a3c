"""Text from peers made safe for logs and terminals.

AE titles, UIDs, series descriptions, error comments and file names come from the network or the drop
folder and end up in log lines and in ``dicom-node status``. A control character in them (a newline, an
ESC starting a terminal escape sequence, a bidi override) could forge a log line or rewrite the
operator's terminal, so every character that is not printable is shown as a Python-style escape
(``\\n``, ``\\x1b``, ``\\u202e``). Backslashes are left as they are (DICOM uses them as value separators).
"""

from __future__ import annotations

import logging

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` as a string with every non-printable character escaped."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape(c) for c in s)


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class EscapingFormatter(logging.Formatter):
    """A formatter whose records cannot forge lines or carry terminal escapes: the message (with its
    arguments) is escaped into one line; a traceback keeps its lines, each escaped and indented, so
    none of them (an exception message with a peer's newline included) starts like a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:
        return _indented(super().formatException(ei))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:
        return _indented(stack_info)


def _indented(text: str) -> str:
    return "\n".join("  " + printable(line) for line in text.split("\n"))


def install() -> None:
    """Give every handler of the root logger an :class:`EscapingFormatter` with its own format.

    Called once by the entry point after the handlers are set up; every logger's records (pynetdicom's
    included: they propagate to the root) then pass through it."""
    for handler in logging.getLogger().handlers:
        old = handler.formatter or logging.Formatter()
        handler.setFormatter(EscapingFormatter(old._fmt, old.datefmt))
