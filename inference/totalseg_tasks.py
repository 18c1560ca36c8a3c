"""TotalSegmentator tasks (``totalseg_task`` in model-serve-spec.yaml), resolved the way the installed
``totalsegmentator`` package resolves them (its ``python_api.get_task_config`` and the task branches of
``totalsegmentator(...)`` / ``nnunet.nnUNet_predict_image``).

The tables come from the package at run time: ``map_tasks_config.TASK_CONFIGS`` / ``DEFAULT_CONFIG`` /
``TASK_ID_WEIGHTS_CONFIGS`` and ``map_to_binary`` (``class_map`` and the per-part class maps of the
multi-part tasks). A task resolves to a :class:`TotalSegTask`: the main :class:`TaskRun` (one or
several nnU-Net datasets, merged with the package's class maps), the spacing it resamples to, its
sliding-window step, its folds, and an optional :class:`CropRun` (the rough model TotalSegmentator runs
first to crop to an organ, to ``roi_subset`` or to the body).

Task names are the package's plus ``<task>_fast`` / ``<task>_fastest``; the spec's
``totalseg_options`` give ``fast``, ``fastest``, ``roi_subset``, ``robust_crop`` and ``body_seg``,
checked here as TotalSegmentator checks them (and refused where TotalSegmentator would ignore them).

Weights are looked up, never downloaded (:mod:`inference.totalseg_weights`). Every dataset a task needs
(each part, and the crop model) must be there at load: a missing one is a :class:`SpecError` naming
the task, the dataset folder and the folder searched.

Refused at load (not built): tasks that crop with another full task (``crop_model``), feed a cascade
mask, remove voxels outside another structure (``remove_outside``) or post-process vertebrae
(``vertebrae_pp*``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.errors import SpecError
from inference.totalseg_weights import check_model_dir, dataset_dir, weights_root

__all__ = ["TotalSegTask", "describe", "known_tasks", "parse_options", "resolve_task", "weights_root"]

logger = logging.getLogger(__name__)

DEFAULT_PLANS = "nnUNetPlans"

#: Multi-part tasks: the ``map_to_binary`` names of their per-part class maps and dataset -> part tables
#: (as ``nnunet.nnUNet_predict_image`` picks them).
_PART_TABLES = {
    "total": ("class_map_5_parts", "map_taskid_to_partname_ct"),
    "total_v3": ("class_map_5_parts_total_v3", "map_taskid_to_partname_ct_v3"),
    "total_mr": ("class_map_parts_mr", "map_taskid_to_partname_mr"),
    "headneck_muscles": ("class_map_parts_headneck_muscles", "map_taskid_to_partname_headneck_muscles"),
}
#: Tasks run with a sliding-window step of 0.8 instead of 0.5 (``nnUNet_predict_image``).
_STEP_08_TASKS = frozenset({"total", "total_v3", "total_mr"})
#: Trainers the package registers with nnU-Net itself (``totalsegmentator.nnunet.custom_trainers``).
_CUSTOM_TRAINERS = frozenset(
    {
        "nnUNetTrainer_MOSAIC_1k_QuarterLR_NoMirroring",
        "nnUNetTrainerDiceTopK10Loss_2000epochs",
        "nnUNetTrainerSkeletonRecall",
    }
)
_MODES = ("fastest", "fast")


class TotalSegOptions(BaseModel):
    """TotalSegmentator options that change the result (``totalseg_options`` of a spec model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fast: bool = False
    fastest: bool = False
    roi_subset: list[str] | None = Field(default=None, min_length=1)
    robust_crop: bool = False
    body_seg: bool = False


@dataclass(frozen=True)
class TaskPart:
    """One nnU-Net dataset of a run. ``to_task``: its label values -> the run's label values."""

    dataset_id: int
    model_dir: Path
    to_task: dict[int, int]


@dataclass(frozen=True)
class TaskRun:
    """One ``nnUNet_predict_image`` call: the parts (merged in this order, later parts win), the spacing
    (x, y, z) mm resampled to (None: none), the sliding-window step and the folds."""

    task_name: str
    parts: tuple[TaskPart, ...]
    resample: tuple[float, float, float] | None
    step_size: float
    folds: tuple[int, ...] | Literal["all"]
    labels: dict[int, str]
    trainer: str
    plans: str
    configuration: str

    @property
    def multi_part(self) -> bool:
        return len(self.parts) > 1


@dataclass(frozen=True)
class CropRun:
    """The rough model run first; the main run is cropped to the voxels with one of ``rois`` (their
    label values in ``run.labels``; ``None``: any foreground) plus ``addon_mm`` on each side."""

    run: TaskRun
    rois: tuple[int, ...] | None
    addon_mm: tuple[float, float, float]


@dataclass(frozen=True)
class TotalSegTask:
    """A TotalSegmentator task ready to run. ``labels``: the output label map (label value -> class name,
    restricted to ``roi_subset``)."""

    task: str
    base_task: str
    mode: str | None
    options: TotalSegOptions
    main: TaskRun
    crop: CropRun | None
    roi_subset: tuple[str, ...] | None
    labels: dict[int, str]
    licence_required: bool
    weights_root: Path

    @property
    def model_dir(self) -> Path:
        """The first part's nnU-Net folder (the model's ``model_dir``)."""
        return self.main.parts[0].model_dir

    @property
    def dataset_id(self) -> int:
        return self.main.parts[0].dataset_id

    @property
    def folds(self) -> tuple[int, ...] | None:
        return None if self.main.folds == "all" else self.main.folds

    def model_dirs(self) -> list[Path]:
        """Every nnU-Net folder the task loads (crop model first, then the parts)."""
        runs = ([self.crop.run] if self.crop else []) + [self.main]
        return [part.model_dir for run in runs for part in run.parts]


# ---------------------------------------------------------------------------------------- tables


def _package() -> Any:
    try:
        import totalsegmentator.map_tasks_config as tasks
        import totalsegmentator.map_to_binary as binary
    except ImportError as exc:
        raise SpecError(f"totalseg_task needs the totalsegmentator package: {exc}") from exc
    return tasks, binary


def known_tasks() -> list[str]:
    """Every task name :func:`resolve_task` may accept, with the ``_fast`` / ``_fastest`` forms."""
    tasks, _ = _package()
    names: list[str] = []
    for name, config in tasks.TASK_CONFIGS.items():
        names.append(name)
        names.extend(f"{name}_{mode}" for mode in config.get("sub_modes", {}) if mode != "default")
    return sorted(names)


def _split_mode(task: str, configs: Mapping[str, Any]) -> tuple[str, str | None]:
    if task in configs:
        return task, None
    for mode in _MODES:
        base = task.removesuffix(f"_{mode}")
        if base != task and base in configs:
            return base, mode
    import difflib

    close = difflib.get_close_matches(task, known_tasks(), n=5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SpecError(f"unknown TotalSegmentator task {task!r}{hint}")


def _task_config(base: str, mode: str | None, options: TotalSegOptions) -> dict[str, Any]:
    """``python_api.get_task_config`` without its prints, exits and silent fall-backs."""
    tasks, _ = _package()
    raw = tasks.TASK_CONFIGS[base]
    config = dict(tasks.DEFAULT_CONFIG)
    if options.robust_crop:
        config["robust_crop"] = True
    config["plans"] = DEFAULT_PLANS
    if "sub_modes" in raw:
        chosen = mode or "default"
        if chosen not in raw["sub_modes"]:
            have = ", ".join(m for m in raw["sub_modes"] if m != "default")
            raise SpecError(f"TotalSegmentator task {base!r} has no {chosen!r} mode (it has: {have})")
        config.update(raw["sub_modes"][chosen])
    else:
        if mode is not None:
            why = "it does not work with --fast" if raw.get("disallow_fast") else "it has no fast modes"
            raise SpecError(f"TotalSegmentator task {base!r} cannot run {mode}: {why}")
        config.update({k: v for k, v in raw.items() if k not in ("disallow_fast", "commercial", "info_msg")})
    config["commercial"] = bool(raw.get("commercial"))
    return config


def _resample(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return (float(value),) * 3
    x, y, z = (float(v) for v in value)
    return (x, y, z)


def _folds(value: Any) -> tuple[int, ...] | Literal["all"]:
    return "all" if value is None else tuple(int(f) for f in value)


def _run(
    task: str,
    root: Path,
    task_name: str,
    dataset_ids: list[int],
    *,
    trainer: str,
    plans: str,
    configuration: str,
    resample: tuple[float, float, float] | None,
    folds: tuple[int, ...] | Literal["all"],
) -> TaskRun:
    _, binary = _package()
    labels = {int(k): str(v) for k, v in sorted(binary.class_map[task_name].items())}
    inverse = {name: value for value, name in labels.items()}
    parts = []
    for dataset_id in dataset_ids:
        if len(dataset_ids) > 1:
            part_maps_name, part_names_name = _PART_TABLES[task_name]
            part_map = getattr(binary, part_maps_name)[getattr(binary, part_names_name)[dataset_id]]
            part_labels = {int(k): str(v) for k, v in part_map.items()}
        else:
            part_labels = labels
        model_dir = dataset_dir(task, root, dataset_id) / f"{trainer}__{plans}__{configuration}"
        check_model_dir(task, model_dir, folds, part_labels)
        to_task = {value: inverse[name] for value, name in part_labels.items()}
        parts.append(TaskPart(dataset_id=dataset_id, model_dir=model_dir, to_task=to_task))
    if trainer in _CUSTOM_TRAINERS:
        register_custom_trainers()
    return TaskRun(
        task_name=task_name,
        parts=tuple(parts),
        resample=resample,
        step_size=0.8 if task_name in _STEP_08_TASKS else 0.5,
        folds=folds,
        labels=labels,
        trainer=trainer,
        plans=plans,
        configuration=configuration,
    )


def register_custom_trainers() -> None:
    """Let nnU-Net find the trainer classes TotalSegmentator ships (importing ``totalsegmentator.nnunet``
    registers them in nnU-Net's trainer lookup; it downloads nothing)."""
    import totalsegmentator.nnunet  # noqa: F401


# ---------------------------------------------------------------------------------------- tasks


def parse_options(raw: Mapping[str, Any] | None) -> TotalSegOptions:
    try:
        return TotalSegOptions.model_validate(dict(raw or {}))
    except ValidationError as exc:
        from inference.args import describe_validation_error

        raise SpecError(f"invalid totalseg_options: {describe_validation_error(exc)}") from exc


def resolve_task(task: str, root: Path, options: TotalSegOptions | None = None) -> TotalSegTask:
    """Resolve ``task`` (with ``options``) to the runs TotalSegmentator would make, checking every
    weights folder under ``root``."""
    opts = options or TotalSegOptions()
    tasks, binary = _package()
    base, mode = _split_mode(task, tasks.TASK_CONFIGS)
    if opts.fast and opts.fastest:
        raise SpecError("totalseg_options: fast and fastest exclude each other")
    option_mode = "fast" if opts.fast else ("fastest" if opts.fastest else None)
    if mode and option_mode and mode != option_mode:
        raise SpecError(f"task {task!r} is the {mode} mode; totalseg_options asks for {option_mode}")
    mode = mode or option_mode
    config = _task_config(base, mode, opts)
    for key in ("crop_model", "cascade", "remove_outside"):
        if config.get(key):
            raise SpecError(
                f"TotalSegmentator task {base!r} needs {key} ({config[key]!r}), which the node does not "
                "support yet; run it with TotalSegmentator itself"
            )
    if base in ("vertebrae_pp", "vertebrae_pp_refined"):
        raise SpecError(f"TotalSegmentator task {base!r}: its vertebra post-processing is not supported yet")
    if base not in binary.class_map:
        raise SpecError(f"TotalSegmentator has no class map for task {base!r}")
    task_ids = config["task_id"] if isinstance(config["task_id"], list) else [config["task_id"]]
    if len(task_ids) > 1 and base not in _PART_TABLES:
        raise SpecError(f"TotalSegmentator task {base!r} has several datasets but no per-part class maps")
    is_mr = base.endswith("_mr") or config.get("modality") == "mr"

    roi_subset = None
    if opts.roi_subset is not None:
        if not base.startswith("total"):
            raise SpecError(
                "totalseg_options.roi_subset only works with the total tasks (total, total_mr...)"
            )
        unknown = sorted(set(opts.roi_subset) - set(binary.class_map[base].values()))
        if unknown:
            raise SpecError(
                f"totalseg_options.roi_subset: {', '.join(unknown)} not in task {base!r}'s classes"
            )
        roi_subset = tuple(opts.roi_subset)
    if opts.body_seg and is_mr:
        raise SpecError(
            "totalseg_options.body_seg is not supported for MR tasks (TotalSegmentator ignores it)"
        )
    if opts.body_seg and (roi_subset or config.get("crop")):
        raise SpecError(
            f"totalseg_options.body_seg cannot be combined with cropping (task {base!r} crops already)"
        )

    root = Path(root)
    if roi_subset is not None and len(task_ids) > 1:
        part_maps_name, part_names_name = _PART_TABLES[base]
        part_names = getattr(binary, part_names_name)
        part_maps = getattr(binary, part_maps_name)
        task_ids = [t for t in task_ids if set(part_maps[part_names[t]].values()) & set(roi_subset)]
    main = _run(
        task,
        root,
        base,
        [int(t) for t in task_ids],
        trainer=str(config["trainer"]),
        plans=str(config["plans"]),
        configuration=str(config["model"]),
        resample=_resample(config.get("resample")),
        folds=_folds(config.get("folds")),
    )
    crop = _crop_run(task, root, base, config, roi_subset, opts, is_mr)
    labels = dict(main.labels)
    if roi_subset is not None:
        labels = {k: v for k, v in labels.items() if v in roi_subset}
    licence = bool(config.get("commercial"))
    if licence:
        logger.info(
            "TotalSegmentator task %s needs a TotalSegmentator licence; its weights are in %s", base, root
        )
    return TotalSegTask(
        task=task,
        base_task=base,
        mode=mode,
        options=opts,
        main=main,
        crop=crop,
        roi_subset=roi_subset,
        labels=labels,
        licence_required=licence,
        weights_root=root,
    )


def _crop_run(
    task: str,
    root: Path,
    base: str,
    config: Mapping[str, Any],
    roi_subset: tuple[str, ...] | None,
    opts: TotalSegOptions,
    is_mr: bool,
) -> CropRun | None:
    """The rough model ``totalsegmentator(...)`` runs before the task, as it picks it."""
    crop = config.get("crop")
    if isinstance(crop, str):
        crop = [crop]
    if crop or roi_subset is not None:
        robust = bool(opts.robust_crop or config.get("robust_crop")) or (is_mr and roi_subset is not None)
        if robust:
            dataset_id, spacing = (852 if base.endswith("_mr") else 297), 3.0
        elif base.endswith("_mr"):
            dataset_id, spacing = 852, 3.0
        else:
            dataset_id, spacing = 298, 6.0
        crop_task = "total_mr" if is_mr else "total"
        trainer = (
            "nnUNetTrainer_2000epochs_NoMirroring"
            if base.endswith("_mr")
            else "nnUNetTrainer_4000epochs_NoMirroring"
        )
        if crop and ("body_trunc" in crop or "body_extremities" in crop):
            dataset_id, spacing, trainer, crop_task = 300, 6.0, "nnUNetTrainer", "body"
        run = _run(
            task,
            root,
            crop_task,
            [dataset_id],
            trainer=trainer,
            plans=DEFAULT_PLANS,
            configuration="3d_fullres",
            resample=(spacing,) * 3,
            folds=(0,),
        )
        names = list(crop or roi_subset or ())
        inverse = {name: value for value, name in run.labels.items()}
        missing = [n for n in names if n not in inverse]
        if missing:
            raise SpecError(
                f"TotalSegmentator task {base!r}: crop classes {missing} not in {crop_task}'s class map"
            )
        # totalsegmentator(...) uses a 20 mm margin whenever the crop model is its default one.
        return CropRun(run=run, rois=tuple(inverse[n] for n in names), addon_mm=(20.0, 20.0, 20.0))
    if opts.body_seg:
        run = _run(
            task,
            root,
            "body",
            [300],
            trainer="nnUNetTrainer",
            plans=DEFAULT_PLANS,
            configuration="3d_fullres",
            resample=(6.0, 6.0, 6.0),
            folds=(0,),
        )
        addon = tuple(float(a) for a in config.get("crop_addon") or (3, 3, 3))
        return CropRun(run=run, rois=None, addon_mm=(addon[0], addon[1], addon[2]))
    return None


def describe(task: TotalSegTask) -> str:
    """One line for logs: task, datasets, spacing, crop."""
    parts = "+".join(str(p.dataset_id) for p in task.main.parts)
    spacing = "none" if task.main.resample is None else "x".join(f"{s:g}" for s in task.main.resample)
    crop = "" if task.crop is None else f", cropped by dataset {task.crop.run.parts[0].dataset_id}"
    where = f"weights {task.weights_root}"
    return f"TotalSegmentator {task.task} (datasets {parts}, resample {spacing} mm{crop}; {where})"
