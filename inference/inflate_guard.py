"""A bound on what a deflated DICOM file may expand to before pydicom inflates it whole.

pydicom reads a Deflated Explicit VR Little Endian file by inflating its entire data set in memory; a
1 MB file can inflate to gigabytes (a decompression bomb). :func:`check_inflated_size` inflates such a
file in steps, keeping nothing, and refuses it once it exceeds the limit; other files cost a read of
their file meta only.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from inference.errors import SeriesError

#: The default for the most one data set may inflate to; the node passes its own setting
#: (``node.max_dataset_bytes``, which also bounds a data set received over the network).
DEFAULT_MAX_INFLATED_BYTES = 2 * 1024**3
_STEP = 1024 * 1024


def check_inflated_size(path: Path, limit: int = DEFAULT_MAX_INFLATED_BYTES) -> None:
    """Raise :class:`SeriesError` if ``path`` is deflated and inflates beyond ``limit`` bytes."""
    with open(path, "rb") as fp:
        try:
            read_preamble(fp, force=False)
            meta = read_dataset(fp, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
        except Exception:
            return  # not a Part 10 file: pydicom's own reading reports it
        if str(meta.get("TransferSyntaxUID", "")) != DeflatedExplicitVRLittleEndian:
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        pending = b""
        while not inflater.eof:
            chunk = pending or fp.read(64 * 1024)
            if not chunk:
                return
            try:
                total += len(inflater.decompress(chunk, _STEP))
            except zlib.error:
                return  # pydicom reports the broken stream
            pending = inflater.unconsumed_tail
            if total > limit:
                raise SeriesError(f"{path}: deflated data set inflates to more than {limit} bytes")
