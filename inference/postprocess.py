"""Turning a prediction into the label map we report.

Without ``proba_threshold`` the label map is nnU-Net's own (argmax of the probabilities),
optionally restricted to the labels in ``class_idx``.

With ``proba_threshold`` (nnunet_serve's lesion-candidate protocol, our implementation): for each
probability channel in ``class_idx`` (default: every foreground channel) values below the
threshold are zeroed, the rest split into 26-connected components, components of
``min_size`` (10) voxels or fewer are dropped, and so are components whose highest probability is
below ``min_confidence`` (default: the threshold). Optionally a component must also overlap a
reference mask: ``|component & reference| / |component| >= min_intersection``. Surviving voxels
take the channel's label; where two channels survive, the more probable one wins.

Label maps are relabelled with lookup tables, never per-voxel Python.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.errors import PredictionError

logger = logging.getLogger(__name__)

MIN_COMPONENT_VOXELS = 10
DEFAULT_MIN_INTERSECTION = 0.1
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class PostprocessOptions:
    """``class_idx``: probability channels (= label values for softmax models) to keep."""

    proba_threshold: float | None = None
    min_confidence: float | None = None
    class_idx: tuple[int, ...] | None = None
    min_size: int = MIN_COMPONENT_VOXELS


def label_dtype(max_label: int) -> np.dtype:
    """uint8 when every label fits, else uint16."""
    if max_label > np.iinfo(np.uint16).max:
        raise PredictionError(f"label value {max_label} does not fit a uint16 label map")
    return np.dtype(np.uint8) if max_label <= np.iinfo(np.uint8).max else np.dtype(np.uint16)


def relabel(labels: np.ndarray, mapping: Mapping[int, int], *, others: int | None = None) -> np.ndarray:
    """Map label values through a lookup table. Values not in ``mapping`` keep their value, or
    become ``others`` when given."""
    if labels.dtype.kind not in "ub":
        raise PredictionError(f"label maps must be unsigned integers, got {labels.dtype}")
    top = int(labels.max(initial=0))
    size = max(top, *mapping.keys(), 0) + 1 if mapping else top + 1
    lut = np.arange(size, dtype=np.int64) if others is None else np.full(size, others, dtype=np.int64)
    for source, target in mapping.items():
        lut[int(source)] = int(target)
    out_dtype = label_dtype(int(lut.max(initial=0)))
    return lut.astype(out_dtype)[labels]


def keep_labels(labels: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """Zero every label not in ``keep`` (lookup table)."""
    return relabel(labels, {int(k): int(k) for k in keep}, others=0)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a boolean mask: (component index per voxel, count)."""
    labelled, count = ndimage.label(mask, structure=_STRUCTURE_26)
    return labelled, int(count)


def overlap_fractions(labelled: np.ndarray, count: int, reference: np.ndarray) -> np.ndarray:
    """For components 1..count of ``labelled``: |component & reference| / |component|
    (index 0 is the background and meaningless)."""
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    inside = np.bincount(labelled[np.asarray(reference, dtype=bool)], minlength=count + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(sizes > 0, inside / np.maximum(sizes, 1), 0.0)
    return fractions


def candidates(
    probability: np.ndarray,
    threshold: float,
    *,
    min_confidence: float | None = None,
    min_size: int = MIN_COMPONENT_VOXELS,
    intersect_with: np.ndarray | None = None,
    min_intersection: float = DEFAULT_MIN_INTERSECTION,
) -> np.ndarray:
    """Boolean mask of the components of one probability channel that pass the protocol."""
    confidence = threshold if min_confidence is None else min_confidence
    mask = (probability >= threshold) & (probability > 0)
    labelled, count = components(mask)
    if count == 0:
        return mask
    index = np.arange(1, count + 1)
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    peaks = np.asarray(ndimage.maximum(probability, labelled, index), dtype=np.float64)
    keep = (sizes > min_size) & (peaks >= confidence)
    if intersect_with is not None:
        keep &= overlap_fractions(labelled, count, intersect_with)[1:] >= min_intersection
    lut = np.concatenate([[False], keep])
    return lut[labelled]


def remove_small_objects(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Zero the 26-connected components of each label that have fewer than ``min_voxels`` voxels."""
    out = labels.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        labelled, count = components(labels == value)
        sizes = np.bincount(labelled.ravel(), minlength=count + 1)
        small = sizes < min_voxels
        small[0] = False
        out[small[labelled]] = 0
    return out


def intersect_components(
    labels: np.ndarray, reference: np.ndarray, min_intersection: float = DEFAULT_MIN_INTERSECTION
) -> np.ndarray:
    """Keep the 26-connected foreground components of ``labels`` of which at least
    ``min_intersection`` lies inside ``reference`` (non-zero); zero the others."""
    labelled, count = components(labels > 0)
    if count == 0:
        return labels.copy()
    keep = overlap_fractions(labelled, count, reference) >= min_intersection
    keep[0] = False
    dropped = int(count - keep[1:].sum())
    if dropped:
        logger.debug("intersection filter dropped %d of %d component(s)", dropped, count)
    return np.where(keep[labelled], labels, 0).astype(labels.dtype, copy=False)


def threshold_labels(
    probabilities: np.ndarray,
    options: PostprocessOptions,
    *,
    channel_labels: Mapping[int, int] | None = None,
    intersect_with: np.ndarray | None = None,
    min_intersection: float = DEFAULT_MIN_INTERSECTION,
) -> np.ndarray:
    """Label map from thresholded probability channels (see module doc). ``channel_labels`` maps
    a channel to its label value (identity by default, as for softmax models)."""
    if options.proba_threshold is None:
        raise PredictionError("threshold_labels needs proba_threshold")
    n_channels = probabilities.shape[0]
    channels = options.class_idx or tuple(range(1, n_channels))
    for channel in channels:
        if not 0 <= channel < n_channels:
            raise PredictionError(f"class_idx {channel} is not a probability channel (0..{n_channels - 1})")
    mapping = dict(channel_labels or {})
    values = [int(mapping.get(c, c)) for c in channels]
    out = np.zeros(probabilities.shape[1:], dtype=label_dtype(max(values, default=0)))
    best = np.zeros(probabilities.shape[1:], dtype=np.float32)
    for channel, value in zip(channels, values, strict=True):
        probability = probabilities[channel]
        kept = candidates(
            probability,
            options.proba_threshold,
            min_confidence=options.min_confidence,
            min_size=options.min_size,
            intersect_with=intersect_with,
            min_intersection=min_intersection,
        )
        take = kept & (probability > best)
        out[take] = value
        best[take] = probability[take]
    return out


def postprocess(
    labels: np.ndarray,
    probabilities: np.ndarray | None,
    options: PostprocessOptions,
    *,
    channel_labels: Mapping[int, int] | None = None,
) -> np.ndarray:
    """The reported label map of one stage: thresholded components when ``proba_threshold`` is
    set (needs probabilities), else nnU-Net's argmax restricted to ``class_idx``."""
    if options.proba_threshold is not None:
        if probabilities is None:
            raise PredictionError("proba_threshold is set but the prediction has no probabilities")
        return threshold_labels(probabilities, options, channel_labels=channel_labels)
    if options.class_idx:
        mapping = dict(channel_labels or {})
        return keep_labels(labels, [mapping.get(c, c) for c in options.class_idx])
    return labels
