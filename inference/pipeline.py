"""One inference request end to end, in this process.

Resolve the models, validate the arguments and plan the cascade (before touching any pixel), load
each input series once (:func:`inference.series.load_series`), bring extra channels onto the grid
of the first series, run the stages on warm predictors, then write the results into the request's
``output_dir``: a DICOM SEG per reported stage (``seg-<model>.dcm``, written atomically, UIDs
derived from the source series and the model, and from every input series and its content when there
are several) and NIfTI copies when asked.

Request and result types live in :mod:`inference.api` (the torch-free interface the node uses).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from inference.api import InferenceRequest, InferenceResult, OutputFile
from inference.args import StageArgs, merge
from inference.bvalues import closest_b_value_filter
from inference.cascade import Stage, StageResult, StageRunner, run_cascade
from inference.errors import InferenceError, PredictionError
from inference.nifti import write_nifti
from inference.predictors import Prediction, PredictorCache
from inference.request_check import plan_request, seg_each_stage
from inference.series import SourceSeries, load_series
from inference.spec import ModelCatalog, ResolvedModel
from inference.volume import Geometry, Volume

logger = logging.getLogger(__name__)

#: Stage arguments that change what a model outputs (hence the SEG's content).
_OUTPUT_ARGS = (
    "use_folds",
    "checkpoint_name",
    "tta",
    "tile_step_size",
    "proba_threshold",
    "min_confidence",
    "class_idx",
    "min_intersection",
    "crop_padding",
    "cascade_mode",
)


def inputs_key(sources: Sequence[SourceSeries], versions: Sequence[str] | None) -> str | None:
    """What the results of a multi-series request are derived from besides the first series: every
    input series' UID and content (its ``input_versions`` token, else its SOP Instance UIDs). None
    for one series (its results' UIDs depend on that series and the model alone)."""
    if len(sources) < 2:
        return None
    parts = []
    for index, source in enumerate(sources):
        if versions is not None:
            content = versions[index]
        else:
            content = hashlib.sha256(" ".join(sorted(set(source.sop_instance_uids))).encode()).hexdigest()
        parts.append(f"{source.series_uid}={content}")
    return "inputs:" + "|".join(parts)


def uid_variant(
    stages: Sequence[Stage],
    index: int,
    defaults: Callable[[str], StageArgs],
    inputs: str | None = None,
) -> str | None:
    """What distinguishes stage ``index``'s SEG from the model's plain run on one series: None when
    the stage is alone, runs with its model's default arguments on one series (so its UIDs depend
    only on the source series and the model), else a short hash of the stages up to it, their
    non-default arguments and (``inputs``, see :func:`inputs_key`) every input series."""
    parts = [inputs] if inputs else []
    for position, stage in enumerate(stages[: index + 1]):
        base = defaults(stage.model)
        changed = {
            name: getattr(stage.args, name)
            for name in _OUTPUT_ARGS
            if getattr(stage.args, name) != getattr(base, name)
            and not (position == 0 and name in ("min_intersection", "crop_padding", "cascade_mode"))
        }
        parts.append(f"{stage.model}:{sorted(changed.items())!r}:{[str(i) for i in stage.inputs]}")
        plain_inputs = [i.series for i in stage.inputs] == list(range(len(stage.inputs)))
        if position == 0 and index == 0 and not changed and plain_inputs and not inputs:
            return None
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _same_grid(a: Geometry, b: Geometry) -> bool:
    return (
        a.shape == b.shape
        and np.allclose(a.spacing, b.spacing, atol=1e-4)
        and np.allclose(a.origin, b.origin, atol=1e-3)
        and np.allclose(a.direction, b.direction, atol=1e-5)
    )


def on_grid(volume: Volume, reference: Geometry) -> np.ndarray:
    """``volume`` resampled (linear) onto ``reference``; itself when it is already on that grid."""
    if _same_grid(volume.geometry, reference):
        return np.asarray(volume.array, dtype=np.float32)
    target = sitk.Image([int(n) for n in reversed(reference.shape)], sitk.sitkFloat32)
    target.SetSpacing(reference.spacing)
    target.SetOrigin(reference.origin)
    target.SetDirection(reference.direction)
    moving = Volume(np.asarray(volume.array, dtype=np.float32), volume.geometry).to_sitk()
    resampled = sitk.Resample(moving, target, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


@dataclass
class _Timer:
    inference: float = 0.0


@dataclass
class Segmentation:
    """What :meth:`Pipeline.segment` produced: the loaded series, the grid every array is on (the
    first series'), the input arrays on that grid and one result per stage."""

    stages: list[Stage]
    sources: list[SourceSeries] = field(default_factory=list)
    reference: Geometry = field(
        default_factory=lambda: Geometry(
            (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (0, 0, 0)
        )
    )
    arrays: list[np.ndarray] = field(default_factory=list)
    results: list[StageResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """The final stage's label map (z, y, x) on :attr:`reference`."""
        return self.results[-1].labels


class Pipeline:
    """Runs requests against a model catalog on one predictor cache (hence one device)."""

    def __init__(
        self,
        catalog: ModelCatalog,
        cache: PredictorCache,
        *,
        probabilities_dtype: Any = np.float32,
    ) -> None:
        self.catalog = catalog
        self.cache = cache
        self._probabilities_dtype = probabilities_dtype

    # ------------------------------------------------------------------ planning

    def plan(self, request: InferenceRequest) -> list[Stage]:
        """Resolve models and arguments into stages; raises before any file is read."""
        stages = plan_request(
            self.catalog,
            request.models,
            request.args,
            n_series=len(request.inputs),
            stage_inputs=request.stage_inputs,
            save_probabilities=request.nifti_probabilities,
        )
        for stage in stages:
            if self.catalog.resolve(stage.model).totalseg is not None:
                _check_totalseg_stage(stage, stages)
        return stages

    # ------------------------------------------------------------------ running

    def _runner(self, timer: _Timer, reference: Geometry) -> StageRunner:
        def run(
            stage: Stage, images: list[np.ndarray], spacing_xyz: Sequence[float], probabilities: bool
        ) -> Prediction:
            model = self.catalog.resolve(stage.model)
            folds = model.check_stage(stage.args)
            started = time.perf_counter()
            try:
                if model.totalseg is not None:
                    return _totalseg_stage(self.cache, model, stage, images, reference, folds)
                return self.cache.predict(
                    model.model_dir,
                    images,
                    spacing_xyz,
                    folds=folds,
                    checkpoint=stage.args.checkpoint_name,
                    tta=stage.args.tta,
                    tile_step_size=stage.args.tile_step_size,
                    probabilities=probabilities,
                    probabilities_dtype=self._probabilities_dtype,
                    min_mem_mib=model.min_mem,
                )
            finally:
                timer.inference += time.perf_counter() - started

        return run

    def segment(self, request: InferenceRequest) -> Segmentation:
        """Plan, load and run every stage; nothing is written."""
        started = time.perf_counter()
        stages = self.plan(request)
        done = Segmentation(stages=stages)

        t = time.perf_counter()
        done.sources = self._load(request)
        first = done.sources[0]
        done.reference = first.volume.geometry
        for index, source in enumerate(done.sources):
            if index and not _same_grid(source.volume.geometry, done.reference):
                done.warnings.append(
                    f"series {source.series_uid} (input {index}) resampled onto the grid of series "
                    f"{first.series_uid}"
                )
            done.warnings.extend(source.warnings)
        done.arrays = [on_grid(s.volume, done.reference) for s in done.sources]
        done.timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        timer = _Timer()
        done.results = run_cascade(
            stages, done.arrays, done.reference.spacing, self._runner(timer, done.reference)
        )
        for stage_result in done.results:
            done.warnings.extend(stage_result.warnings)
        done.timings["inference"] = timer.inference
        done.timings["postprocess"] = time.perf_counter() - t - timer.inference
        done.timings["segment"] = time.perf_counter() - started
        return done

    def run(self, request: InferenceRequest) -> InferenceResult:
        """Segment, then write the SEG(s) and any NIfTI copies into ``request.output_dir``."""
        started = time.perf_counter()
        done = self.segment(request)
        result = InferenceResult(warnings=list(done.warnings))
        result.timings = {k: done.timings[k] for k in ("load", "inference", "postprocess")}

        t = time.perf_counter()
        final = done.results[-1]
        result.empty = final.empty
        request.output_dir.mkdir(parents=True, exist_ok=True)
        last = len(done.results) - 1
        each = request.seg_each_stage or seg_each_stage(self.catalog, request.models, request.args)
        for index in range(last + 1) if each else [last]:
            result.outputs.extend(self._write_seg(done, index, request))
        result.timings["seg_write"] = time.perf_counter() - t
        result.outputs.extend(self._write_nifti(request, done))
        result.timings["total"] = time.perf_counter() - started
        logger.info(
            "series %s: %s -> %s in %.2f s (load %.2f, inference %.2f, postprocess %.2f, seg %.2f)",
            done.sources[0].series_uid,
            "+".join(s.model for s in done.stages),
            "empty" if result.empty else f"{len(result.outputs)} output(s)",
            result.timings["total"],
            result.timings["load"],
            result.timings["inference"],
            result.timings["postprocess"],
            result.timings["seg_write"],
        )
        return result

    def _load(self, request: InferenceRequest) -> list[SourceSeries]:
        """Each input series as a volume; with ``bvalue_for_filtering`` (the request's, else the first
        model's default), a series holding several b-values keeps the closest one's images."""
        target = merge(
            self.catalog.resolve(request.models[0]).default_args, request.args
        ).bvalue_for_filtering
        sources = []
        for index, files in enumerate(request.inputs):
            if not files:
                raise InferenceError(f"input {index} lists no files")
            paths = [Path(f) for f in files]
            select, note = closest_b_value_filter(paths, target) if target is not None else (None, None)
            source = load_series(paths, select=select, max_inflated_bytes=request.max_inflated_bytes)
            if note:
                logger.info("input %d, series %s: %s", index, source.series_uid, note)
                source.warnings.append(f"series {source.series_uid}: {note}")
            sources.append(source)
        return sources

    def _write_seg(self, done: Segmentation, index: int, request: InferenceRequest) -> list[OutputFile]:
        """Stage ``index``'s DICOM outputs: its SEG (none for an empty result with ``skip``), an
        RTSTRUCT with ``save_rt_struct_output``, a FRACTIONAL SEG of its probabilities with
        ``save_proba_map``."""
        from inference.rtstruct import build_rtstruct
        from inference.seg import build_seg, reference_other_series, write_seg
        from inference.seg_fractional import build_fractional_seg

        stage_result = done.results[index]
        args = stage_result.stage.args
        model = self.catalog.resolve(stage_result.stage.model)
        source = done.sources[0]
        variant = uid_variant(
            done.stages,
            index,
            lambda m: self.catalog.resolve(m).default_args.for_stage(0),
            inputs_key(done.sources, request.input_versions),
        )
        if stage_result.empty and request.empty_result == "skip":
            logger.info("model %s, series %s: empty result, no DICOM output", model.id, source.series_uid)
            return []
        name = f"{model.id}-{args.suffix}" if args.suffix else model.id
        datasets = [
            (
                "seg",
                f"seg-{name}.dcm",
                build_seg(
                    stage_result.labels,
                    source.headers,
                    model,
                    empty_result=request.empty_result,
                    frame_order=source.frame_order,
                    uid_variant=variant,
                    other_series=[other.headers for other in done.sources[1:]],
                ),
            )
        ]
        if args.save_rt_struct_output:
            rtstruct = build_rtstruct(
                stage_result.labels,
                done.reference,
                source.headers,
                model,
                frame_order=source.frame_order,
                uid_variant=variant,
            )
            datasets.append(("rtstruct", f"rtstruct-{name}.dcm", rtstruct))
        if args.save_proba_map and stage_result.probabilities is not None:
            fractional = build_fractional_seg(
                stage_result.probabilities,
                source.headers,
                model,
                frame_order=source.frame_order,
                uid_variant=variant,
            )
            reference_other_series(fractional, [other.headers for other in done.sources[1:]])
            datasets.append(("seg", f"seg-{name}-probabilities.dcm", fractional))
        outputs = []
        for kind, filename, dataset in datasets:
            if dataset is None:
                continue
            path = write_seg(dataset, request.output_dir / filename)
            outputs.append(
                OutputFile(
                    path=path,
                    kind=kind,
                    sop_instance_uid=str(dataset.SOPInstanceUID),
                    sop_class_uid=str(dataset.SOPClassUID),
                )
            )
        return outputs

    def _write_nifti(self, request: InferenceRequest, done: Segmentation) -> list[OutputFile]:
        outputs: list[OutputFile] = []
        out = request.output_dir
        for stage_result in done.results:
            args = stage_result.stage.args
            name = stage_result.stage.model
            if request.nifti or args.save_nifti_output:
                path = write_nifti(stage_result.labels, done.reference, out / f"{name}.nii.gz")
                outputs.append(OutputFile(path=path, kind="nifti_labels"))
            if (
                request.nifti_probabilities or args.save_proba_map
            ) and stage_result.probabilities is not None:
                path = write_nifti(
                    stage_result.probabilities, done.reference, out / f"{name}-probabilities.nii.gz"
                )
                outputs.append(OutputFile(path=path, kind="nifti_probabilities"))
        if request.nifti_inputs or any(r.stage.args.save_nifti_inputs for r in done.results):
            for index, array in enumerate(done.arrays):
                path = write_nifti(array, done.reference, out / f"input-{index}.nii.gz")
                outputs.append(OutputFile(path=path, kind="nifti_input"))
        return outputs


def _check_totalseg_stage(stage: Stage, stages: Sequence[Stage]) -> None:
    """A TotalSegmentator task gives a label map on the whole series: no probabilities, no crop stage."""
    if stage.probabilities:
        raise PredictionError(
            f"model {stage.model} is a TotalSegmentator task: it gives a label map, not probabilities "
            "(proba_threshold, save_proba_map and from:<model>[k] are not available)"
        )
    if stage is not stages[0] and stage.args.cascade_mode == "crop":
        raise PredictionError(
            f"model {stage.model} is a TotalSegmentator task: it cannot be a crop-mode cascade stage"
        )


def _totalseg_stage(
    cache: PredictorCache,
    model: ResolvedModel,
    stage: Stage,
    images: list[np.ndarray],
    reference: Geometry,
    folds: Sequence[Any],
) -> Prediction:
    from inference.totalseg_pipeline import run_on_cache

    assert model.totalseg is not None
    try:
        labels = run_on_cache(
            model.totalseg,
            images,
            reference,
            cache,
            folds=tuple(folds),
            checkpoint=stage.args.checkpoint_name,
            tta=stage.args.tta,
            tile_step_size=stage.args.tile_step_size,
            min_mem_mib=model.min_mem,
        )
    except ValueError as exc:
        raise PredictionError(str(exc)) from exc
    return Prediction(labels=labels)
