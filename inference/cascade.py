"""Model cascades: stages run in order, later stages may take earlier outputs as inputs, and each
stage after the first is tied to the one before by ``cascade_mode``.

Stage inputs are series of the request (their index, ``0`` being the first series) or outputs of
an earlier stage: ``from:<model>`` (its label map), ``from:<model>=k`` (binary mask of label k) or
``from:<model>[k]`` (its probability channel k). A ``<model>`` that is not an earlier stage is
inserted before the stage that needs it, fed the first N inputs of that stage (N = its channel
count). Without explicit inputs a stage takes the first N series of the request.

``cascade_mode`` of stage i > 0 relates it to stage i-1's mask (label map > 0):
- ``intersect``: keep each 26-connected component of stage i whose overlap with the mask
  (|A & B| / |A|) is at least ``min_intersection``;
- ``crop``: predict stage i on the mask's bounding box plus ``crop_padding`` (int: voxels per side;
  float: fraction of the box size per side) and paste the result back (zeros outside).

Every stage uses its own arguments (folds, checkpoint, TTA, thresholds...). This module knows
arrays only; running a model is the injected :class:`StageRunner`'s job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from inference.args import Padding, StageArgs
from inference.errors import ArgsError, PredictionError
from inference.postprocess import (
    MIN_COMPONENT_VOXELS,
    PostprocessOptions,
    intersect_components,
    postprocess,
    remove_small_objects,
)
from inference.stage_inputs import StageInput, parse_stage_input

if TYPE_CHECKING:  # predictors imports torch; planning stays importable without it
    from inference.predictors import Prediction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A planned stage: canonical model id, its inputs, its own arguments."""

    model: str
    inputs: tuple[StageInput, ...]
    args: StageArgs
    inserted: bool = False
    probabilities: bool = False  # whether the prediction must keep probabilities


@dataclass
class StageResult:
    """A stage's final label map (post-processed, cascade applied) and, if kept, probabilities;
    both on the full grid of the request's first series."""

    stage: Stage
    labels: np.ndarray
    probabilities: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not bool(self.labels.any())


class StageRunner(Protocol):
    """Runs one model on input channels (z, y, x) with (x, y, z) spacing."""

    def __call__(
        self, stage: Stage, images: list[np.ndarray], spacing_xyz: Sequence[float], probabilities: bool
    ) -> Prediction: ...


def plan_stages(
    models: Sequence[str],
    *,
    n_series: int,
    channels: Callable[[str], int],
    canonical: Callable[[str], str],
    stage_args: Callable[[str, int | None], StageArgs],
    stage_inputs: Sequence[Sequence[str | int]] | None = None,
    save_probabilities: bool = False,
) -> list[Stage]:
    """Order the stages, inserting models referenced by ``from:`` but not run before.

    ``channels(model)``: input channel count; ``canonical(id_or_alias)``: the model's id;
    ``stage_args(model, i)``: arguments of requested stage i (i is None for an inserted stage,
    which gets its model's defaults and the request's stage-independent arguments)."""
    if not models:
        raise PredictionError("no model requested")
    if stage_inputs is not None and len(stage_inputs) != len(models):
        raise PredictionError(f"{len(stage_inputs)} stage input lists given for {len(models)} model(s)")
    planned: list[Stage] = []
    for index, name in enumerate(models):
        model = canonical(name)
        n_channels = channels(model)
        if stage_inputs is None:
            if n_series < n_channels:
                raise PredictionError(
                    f"model {model} needs {n_channels} input series, the request has {n_series}"
                )
            inputs = tuple(StageInput(series=i) for i in range(n_channels))
        else:
            inputs = tuple(parse_stage_input(item) for item in stage_inputs[index])
            if len(inputs) != n_channels:
                raise PredictionError(
                    f"model {model} needs {n_channels} input(s), stage {index} lists {len(inputs)}"
                )
        resolved: list[StageInput] = []
        for item in inputs:
            if item.series is not None and item.series >= n_series:
                raise PredictionError(
                    f"stage {index} ({model}) uses series {item.series}; the request has {n_series}"
                )
            if item.model is None:
                resolved.append(item)
                continue
            source = canonical(item.model)
            resolved.append(StageInput(model=source, label=item.label, channel=item.channel))
            if not any(stage.model == source for stage in planned):
                needed = channels(source)
                if len(inputs) < needed:
                    raise PredictionError(
                        f"model {source} (referenced by stage {index}, {model}) needs {needed} input(s); "
                        f"stage {index} has only {len(inputs)}"
                    )
                feed = inputs[:needed]
                if any(f.model is not None and canonical(f.model) == source for f in feed):
                    raise PredictionError(f"model {source} would have to take its own output as input")
                logger.info(
                    "cascade: inserting model %s before %s, fed %s", source, model, [str(f) for f in feed]
                )
                planned.append(
                    Stage(model=source, inputs=tuple(feed), args=stage_args(source, None), inserted=True)
                )
        args = _canonical_mask_refs(model, index, stage_args(model, index), planned, canonical)
        planned.append(Stage(model=model, inputs=tuple(resolved), args=args))
    return _mark_probabilities(planned, save_probabilities)


def _canonical_mask_refs(
    model: str, index: int, args: StageArgs, planned: list[Stage], canonical: Callable[[str], str]
) -> StageArgs:
    """``intersect_with`` / ``crop_from`` checked (an earlier stage, the matching cascade mode) and
    written with the model's id."""
    update: dict[str, str] = {}
    for key, mode in (("intersect_with", "intersect"), ("crop_from", "crop")):
        value = getattr(args, key)
        if value is None:
            continue
        if args.cascade_mode != mode:
            raise ArgsError(
                f"stage {index} ({model}): {key} needs cascade_mode {mode!r}, not {args.cascade_mode!r}",
                key=key,
            )
        ref = parse_stage_input(value)
        assert ref.model is not None  # validated with the arguments
        source = canonical(ref.model)
        if not any(stage.model == source for stage in planned):
            raise ArgsError(
                f"stage {index} ({model}): {key} {value!r} names no earlier stage of the cascade", key=key
            )
        update[key] = str(StageInput(model=source, label=ref.label))
    return args.model_copy(update=update) if update else args


def _mask_of(
    stage: Stage, key: str, previous: StageResult | None, results: Sequence[StageResult]
) -> np.ndarray | None:
    """The mask a stage is cropped to / intersected with: its ``crop_from`` / ``intersect_with``
    output, else the previous stage's foreground."""
    value = getattr(stage.args, key)
    if value is None:
        return None if previous is None else previous.labels > 0
    ref = parse_stage_input(value)
    source = next((r for r in reversed(results) if r.stage.model == ref.model), None)
    if source is None:  # plan_stages guarantees this cannot happen
        raise PredictionError(f"{key} {value}: model {ref.model} has not run")
    return source.labels == ref.label if ref.label is not None else source.labels > 0


def _mark_probabilities(stages: list[Stage], save_probabilities: bool) -> list[Stage]:
    referenced = {(i.model) for s in stages for i in s.inputs if i.channel is not None}
    marked = []
    for stage in stages:
        needs = (
            stage.args.proba_threshold is not None
            or stage.args.save_proba_map
            or save_probabilities
            or stage.model in referenced
        )
        marked.append(
            Stage(
                model=stage.model,
                inputs=stage.inputs,
                args=stage.args,
                inserted=stage.inserted,
                probabilities=needs,
            )
        )
    return marked


def _input_array(item: StageInput, series: Sequence[np.ndarray], results: list[StageResult]) -> np.ndarray:
    if item.series is not None:
        return series[item.series]
    source = next((r for r in reversed(results) if r.stage.model == item.model), None)
    if source is None:  # plan_stages guarantees this cannot happen
        raise PredictionError(f"stage input {item}: model {item.model} has not run")
    if item.label is not None:
        return (source.labels == item.label).astype(np.float32)
    if item.channel is not None:
        probs = source.probabilities
        if probs is None:
            raise PredictionError(f"stage input {item}: model {item.model} produced no probabilities")
        if not 0 <= item.channel < probs.shape[0]:
            raise PredictionError(f"stage input {item}: model {item.model} has {probs.shape[0]} channels")
        return probs[item.channel].astype(np.float32)
    return source.labels.astype(np.float32)


def crop_box(mask: np.ndarray, padding: Padding) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``padding`` (int: voxels per side; float: fraction of the
    box size per side; three such values: one per axis, (x, y, z)), clipped to the array; None when
    the mask is empty."""
    if not mask.any():
        return None
    per_axis = tuple(reversed(padding)) if isinstance(padding, tuple) else (padding,) * mask.ndim
    box: list[slice] = []
    for axis, padding in enumerate(per_axis):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        low, high = int(present[0]), int(present[-1]) + 1
        if padding is None:
            pad = 0
        elif isinstance(padding, float):
            pad = math.ceil(padding * (high - low))
        else:
            pad = int(padding)
        box.append(slice(max(0, low - pad), min(mask.shape[axis], high + pad)))
    return tuple(box)


def _paste(prediction: Prediction, box: tuple[slice, ...], shape: tuple[int, ...]) -> Prediction:
    from inference.predictors import Prediction

    labels = np.zeros(shape, dtype=prediction.labels.dtype)
    labels[box] = prediction.labels
    probs = None
    if prediction.probabilities is not None:
        probs = np.zeros((prediction.probabilities.shape[0], *shape), dtype=prediction.probabilities.dtype)
        probs[(slice(None), *box)] = prediction.probabilities
    return Prediction(labels=labels, probabilities=probs)


def run_stage(
    stage: Stage,
    images: list[np.ndarray],
    spacing_xyz: Sequence[float],
    previous: StageResult | None,
    runner: StageRunner,
    results: Sequence[StageResult] = (),
) -> StageResult:
    """Predict one stage, apply its post-processing, then its cascade mode against ``previous``'s
    mask (or the ``crop_from`` / ``intersect_with`` output among ``results``)."""
    args = stage.args
    shape = tuple(images[0].shape)
    warnings: list[str] = []
    crop_mask = _mask_of(stage, "crop_from", previous, results) if args.cascade_mode == "crop" else None
    prev_mask = (
        _mask_of(stage, "intersect_with", previous, results) if args.cascade_mode == "intersect" else None
    )
    if previous is not None and crop_mask is not None:
        box = crop_box(crop_mask, args.crop_padding)
        if box is None:
            what = args.crop_from or f"previous stage {previous.stage.model}"
            message = f"model {stage.model} not run: {what} found nothing to crop to"
            logger.info(message)
            warnings.append(message)
            return StageResult(stage, np.zeros(shape, dtype=np.uint8), None, warnings)
        cropped = [image[box] for image in images]
        logger.debug("cascade: %s cropped to %s", stage.model, [(s.start, s.stop) for s in box])
        prediction = _paste(runner(stage, cropped, spacing_xyz, stage.probabilities), box, shape)
    else:
        prediction = runner(stage, images, spacing_xyz, stage.probabilities)
    smaller = args.remove_objects_smaller_than
    options = PostprocessOptions(
        proba_threshold=args.proba_threshold,
        min_confidence=args.min_confidence,
        class_idx=args.class_idx,
        min_size=MIN_COMPONENT_VOXELS if smaller is None else smaller - 1,
    )
    labels = postprocess(prediction.labels, prediction.probabilities, options)
    if smaller is not None and args.proba_threshold is None:
        labels = remove_small_objects(labels, smaller)
    if previous is not None and prev_mask is not None:
        labels = intersect_components(labels, prev_mask, args.min_intersection)
    return StageResult(stage, labels, prediction.probabilities, warnings)


def run_cascade(
    stages: Sequence[Stage], series: Sequence[np.ndarray], spacing_xyz: Sequence[float], runner: StageRunner
) -> list[StageResult]:
    """Run the planned stages in order over the request's series (all on one grid)."""
    results: list[StageResult] = []
    for index, stage in enumerate(stages):
        images = [_input_array(item, series, results) for item in stage.inputs]
        previous = results[-1] if index > 0 else None
        results.append(run_stage(stage, images, spacing_xyz, previous, runner, results))
    return results
