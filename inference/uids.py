"""DICOM UIDs: the one validity check (:func:`is_valid_uid`, used by the node for every UID that builds a
path or a record, and by the engine) and deterministic UIDs: the same inputs always give the same UID.

``derive_uid(*parts)`` = ``"2.25."`` + the decimal value of the first 128 bits of SHA-256 over the parts.
Each part is encoded as its UTF-8 length, a colon and its UTF-8 bytes, so ``("ab", "c")`` and
``("a", "bc")`` never collide. The "2.25" root (ISO/IEC 9834-8 UUID-derived UIDs) needs no
registration; the result has at most 44 characters and no component with a leading zero.
"""

from __future__ import annotations

import hashlib
import re

UID_ROOT = "2.25."
MAX_UID_LENGTH = 64
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*", re.ASCII)


def derive_uid(*parts: str) -> str:
    """A UID determined by ``parts`` (at least one; each a ``str``)."""
    if not parts:
        raise ValueError("derive_uid needs at least one part")
    digest = hashlib.sha256()
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"derive_uid parts must be str, got {type(part).__name__}: {part!r}")
        data = part.encode("utf-8")
        digest.update(f"{len(data)}:".encode("ascii"))
        digest.update(data)
    value = int.from_bytes(digest.digest()[:16], "big")
    return f"{UID_ROOT}{value}"


def is_valid_uid(value: object) -> bool:
    """True for a UID safe to use as a path component and in a record: ASCII digits and dots, no
    empty component, at most 64 characters. A component with a leading zero is accepted: PS3.5 9.1
    forbids it, but senders use such UIDs and refusing them would refuse their data; the UIDs we
    make never have one."""
    return (
        isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH and _UID_RE.fullmatch(value) is not None
    )
