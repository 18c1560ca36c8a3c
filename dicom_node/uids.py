"""UID checks. Paths and records are built only from UIDs that pass :func:`require_uid`; what a valid UID
is, is said once, in :func:`inference.uids.is_valid_uid`."""

from __future__ import annotations

from dicom_node.errors import InvalidUIDError
from inference.uids import MAX_UID_LENGTH, is_valid_uid

__all__ = ["MAX_UID_LENGTH", "is_valid_uid", "require_uid"]


def require_uid(value: object, what: str) -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`InvalidUIDError` naming ``what``."""
    if not is_valid_uid(value):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidUIDError(f"invalid {what}: {shown}")
    assert isinstance(value, str)
    return value
