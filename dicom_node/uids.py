"""UID checks. Paths and records are built only from UIDs that pass :func:`require_uid`."""

from __future__ import annotations

import re

from dicom_node.errors import InvalidUIDError

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """True for a DICOM UID safe to use as a path component: digits and dots, no empty
    component, at most 64 characters."""
    return (
        isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH and _UID_RE.fullmatch(value) is not None
    )


def require_uid(value: object, what: str) -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`InvalidUIDError` naming ``what``."""
    if not is_valid_uid(value):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidUIDError(f"invalid {what}: {shown}")
    assert isinstance(value, str)
    return value
