"""A FRACTIONAL (PROBABILITY) DICOM SEG from a model's probability maps (highdicom).

nnunet_serve's "fractional" SEG is a BINARY SEG of ten probability bins; this is the real thing: one
segment per label (segment number = label value, described as in the label-map SEG), each frame the
probability of that label scaled to 0..255 (``MaximumFractionalValue`` 255). Frames whose
probabilities all round to 0 are omitted. The background channel (0) is not encoded.

UIDs derive like the SEG's (:func:`inference.seg.seg_uids`) with ``probabilities`` added, so the
probability SEG of a run never collides with its label SEG and a re-run yields the same instance.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset

from inference.errors import SegWriteError
from inference.seg import (
    MANUFACTURER,
    SERIES_NUMBER_OFFSET,
    _descriptions,
    _finish,
    _software_version,
    seg_uids,
)
from inference.spec import ResolvedModel

logger = logging.getLogger(__name__)

MAX_FRACTIONAL = 255
_VARIANT = "probabilities"


def build_fractional_seg(
    probabilities: np.ndarray,
    source_headers: Sequence[Dataset],
    model: ResolvedModel,
    *,
    frame_order: Sequence[int] | None = None,
    uid_variant: str | None = None,
    content_datetime: dt.datetime | None = None,
) -> Dataset:
    """``probabilities``: (classes, z, y, x), channel k = label value k, on the source grid
    (``source_headers`` one per slice, or one enhanced multi-frame dataset with ``frame_order``)."""
    if probabilities.ndim != 4:
        raise SegWriteError(
            f"model {model.id!r}: probabilities must be (classes, z, y, x), got {probabilities.shape}"
        )
    classes, z, rows, columns = probabilities.shape
    values = sorted(model.segments)
    if values != list(range(1, classes)):
        raise SegWriteError(
            f"model {model.id!r}: {classes} probability channels do not match labels {values} "
            "(a probability SEG needs one channel per label plus background)"
        )
    first = source_headers[0]
    frames = int(first.get("NumberOfFrames", 1) or 1)
    multiframe = len(source_headers) == 1 and frames > 1
    if not multiframe and len(source_headers) != z:
        raise SegWriteError(f"model {model.id!r}: {z} slices but {len(source_headers)} source headers")
    planes = frames if multiframe else z
    order = list(frame_order) if (multiframe and frame_order is not None) else list(range(z))
    # highdicom wants (frames, rows, columns, segments); quantise once here, uint8 keeps it small
    pixels = np.zeros((planes, rows, columns, classes - 1), dtype=np.uint8)
    for k in range(z):
        plane = np.clip(probabilities[1:, k], 0.0, 1.0) * MAX_FRACTIONAL
        pixels[order[k]] = np.rint(np.moveaxis(plane, 0, -1)).astype(np.uint8)
    source_series_uid = str(first.SeriesInstanceUID)
    variant = f"{uid_variant}-{_VARIANT}" if uid_variant else _VARIANT
    series_uid, sop_uid = seg_uids(source_series_uid, model, variant)
    when = content_datetime or dt.datetime.now()
    output = model.output
    number = output.series_number
    if number is None:
        number = min(int(first.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET + 1, 2**31 - 1)
    else:
        number = min(number + 1, 2**31 - 1)
    description = f"{output.series_description or model.name + ' segmentation'}"[:52] + " probabilities"
    try:
        seg = hd.seg.Segmentation(
            source_images=list(source_headers),
            pixel_array=pixels.astype(np.float32) / MAX_FRACTIONAL,
            segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
            fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            max_fractional_value=MAX_FRACTIONAL,
            segment_descriptions=_descriptions(model),
            series_instance_uid=series_uid,
            series_number=number,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer=output.manufacturer or MANUFACTURER,
            manufacturer_model_name=(output.manufacturer_model_name or model.algorithm.name)[:64],
            software_versions=output.software_versions or _software_version(),
            device_serial_number=(output.device_serial_number or model.version)[:64],
            content_description=f"{model.algorithm.name} probabilities"[:64],
            content_label="PROBABILITY",
            series_description=description,
            content_date=when.date(),
            content_time=when.time(),
            series_date=when.date(),
            series_time=when.time(),
            omit_empty_frames=bool(pixels.any()),  # all empty: keep the frames, a SEG needs one
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SegWriteError(
            f"model {model.id!r}, series {source_series_uid}: "
            f"highdicom could not build the probability SEG: {exc}"
        ) from exc
    _finish(seg, model, source_series_uid, variant, when, first)
    logger.info(
        "model %s, series %s: probability SEG %s, %d frame(s)",
        model.id,
        source_series_uid,
        sop_uid,
        int(seg.NumberOfFrames),
    )
    return seg
