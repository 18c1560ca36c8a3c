"""The content digest of a received data set: what tells a re-sent instance that changed from one that
did not.

Each filed instance's data set bytes (as received, no file meta) are digested while they are written;
the journal keeps the digest, so a re-send of the same SOP Instance is recognised as unchanged (no new
inference, the finished result is delivered again) and a multi-series job's inputs have a content key
that survives a journal rebuild (start-up reconciliation digests the spool file the same way).

XXH3-128 rather than SHA-256: the digest answers "are these the same bytes?" for data a peer chose
to send us. Accidental collisions are out of reach (each re-send is compared with one earlier copy:
about 2^-128), and deliberate ones buy a peer nothing it could not get by sending other data. It is
~30x cheaper: 0.009 ms for a 525 kB CT image against 0.27 ms for SHA-256 with the CPU's SHA
instructions, which was a sixth of the receive path's CPU per instance.

The value names its algorithm (``xxh3-128:<hex>``). Journals written before kept a SHA-256 in
another column, which is no longer read: their rows have no digest, so the first re-send of such an
instance counts as changed (one more inference), never as unchanged.
"""

from __future__ import annotations

import xxhash

ALGORITHM = "xxh3-128"
Buffer = bytes | bytearray | memoryview


class ContentDigest:
    """Digest of bytes fed in order (:meth:`update`); :meth:`value` names the algorithm."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = xxhash.xxh3_128()

    def update(self, data: Buffer) -> None:
        self._state.update(data)

    def value(self) -> str:
        return f"{ALGORITHM}:{self._state.hexdigest()}"


def digest_of(data: Buffer) -> str:
    """The content digest of one buffer."""
    digest = ContentDigest()
    digest.update(data)
    return digest.value()
