"""Pixel data of one read dataset -> numpy array, with a chosen order of pydicom decoding plugins.

pydicom tries every installed plugin in its own order; we put the fastest ones that decode
signed and unsigned 12/16-bit CT correctly first (measured: pyjpegls is ~2x faster than GDCM for
JPEG-LS, pylibjpeg's RLE decoder ~8x faster than pydicom's) and keep the rest as fall-backs, so a
file one library rejects is still decoded by another. When none can, the error names the transfer
syntax, the file and what each plugin said.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from inference.errors import SeriesError

logger = logging.getLogger(__name__)

# Preferred plugin order per transfer syntax; plugins not named here are tried afterwards.
PLUGIN_PREFERENCE: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        JPEGLSLossless: ("pyjpegls", "gdcm", "pylibjpeg"),
        JPEGLSNearLossless: ("pyjpegls", "gdcm", "pylibjpeg"),
        JPEG2000Lossless: ("pylibjpeg", "gdcm", "pillow"),
        JPEG2000: ("pylibjpeg", "gdcm", "pillow"),
        JPEGLosslessSV1: ("gdcm", "pylibjpeg"),
        JPEGLossless: ("gdcm", "pylibjpeg"),
        JPEGBaseline8Bit: ("gdcm", "pylibjpeg", "pillow"),
        JPEGExtended12Bit: ("pylibjpeg", "gdcm", "pillow"),
        RLELossless: ("pylibjpeg", "pydicom"),
    }
)


NATIVE_LITTLE_ENDIAN: frozenset[str] = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)


def transfer_syntax_of(ds: Dataset) -> UID:
    """The dataset's transfer syntax (Implicit VR Little Endian when the file has no meta)."""
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return UID(uid) if uid else ImplicitVRLittleEndian


def _describe(ts: UID) -> str:
    return f"{ts.name} ({ts})" if ts.name != ts else str(ts)


def plugin_order(decoder: Decoder) -> list[str]:
    """Installed plugins of ``decoder`` in the order we try them."""
    available = list(decoder.available_plugins)
    preferred = [p for p in PLUGIN_PREFERENCE.get(decoder.UID, ()) if p in available]
    return preferred + [p for p in available if p not in preferred]


def decoder_for(ts: UID, where: Path) -> Decoder:
    """pydicom's decoder for ``ts``; a SeriesError naming the syntax if nothing installed can decode it."""
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise SeriesError(
            f"{where}: transfer syntax {_describe(ts)} is not supported for decoding pixel data"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        raise SeriesError(
            f"{where}: no installed decoder can decode transfer syntax {_describe(ts)} ({missing})"
        )
    return decoder


def native_pixels(ds: Dataset, ts: UID) -> np.ndarray | None:
    """Greyscale little-endian native pixel data viewed straight from the bytes (no copy), with
    unused high bits masked or sign-extended as pydicom does; None when pydicom must decode it."""
    if ts not in NATIVE_LITTLE_ENDIAN or int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    bits_allocated = int(ds.get("BitsAllocated", 0))
    bits_stored = int(ds.get("BitsStored", bits_allocated))
    data = ds.get("PixelData")
    if bits_allocated not in (8, 16, 32) or not 0 < bits_stored <= bits_allocated or data is None:
        return None
    rows, columns = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    kind = "i" if int(ds.get("PixelRepresentation", 0)) else "u"
    dtype = np.dtype(f"<{kind}{bits_allocated // 8}")
    count = rows * columns * frames
    if len(data) < count * dtype.itemsize:
        return None  # pydicom's decoder reports the short data
    array = np.frombuffer(data, dtype=dtype, count=count)
    array = array.reshape((frames, rows, columns) if frames > 1 else (rows, columns))
    shift = bits_allocated - bits_stored
    if shift:
        array = np.right_shift(np.left_shift(array, shift), shift)
    return array


def decode_pixels(ds: Dataset, where: Path) -> np.ndarray:
    """Stored pixel values of ``ds``: (rows, columns) or (frames, rows, columns), no rescale applied."""
    ts = transfer_syntax_of(ds)
    native = native_pixels(ds, ts)
    if native is not None:
        return native
    decoder = decoder_for(ts, where)
    if not decoder.is_encapsulated:
        return _as_array(decoder, ds, "", ts, where)
    failures = []
    for plugin in plugin_order(decoder):
        try:
            array = _as_array(decoder, ds, plugin, ts, where)
        except SeriesError as exc:
            failures.append(f"{plugin}: {exc.__cause__ or exc}")
            continue
        if failures:
            logger.info("%s decoded by %s after failures: %s", where, plugin, "; ".join(failures))
        return array
    raise SeriesError(
        f"{where}: cannot decode pixel data in transfer syntax {_describe(ts)}; "
        f"every installed decoder failed: {' | '.join(failures)}"
    )


def _as_array(decoder: Decoder, ds: Dataset, plugin: str, ts: UID, where: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # pydicom warns (and logs) per failing plugin; we report failures ourselves
            warnings.simplefilter("ignore")
            array, _ = decoder.as_array(ds, decoding_plugin=plugin)
    except Exception as exc:
        raise SeriesError(f"{where}: cannot decode pixel data ({_describe(ts)}): {exc}") from exc
    return array
