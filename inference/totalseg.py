"""TotalSegmentator tasks as plain nnU-Net models (``totalseg_task`` in model-serve-spec.yaml).

The task table and label names come from the installed ``totalsegmentator`` package at run time
(``map_tasks_config.TASK_CONFIGS`` / ``DEFAULT_CONFIG`` and ``map_to_binary.class_map``). Task names
are TotalSegmentator's (``liver_segments``, ``body``...) plus ``<task>_fast`` / ``<task>_fastest`` for
the tasks that have those sub-modes (``total_fast``, ``total_fastest``, ``total_mr_fast``...).

Weights are looked up, never downloaded: under ``$TOTALSEG_WEIGHTS_PATH`` if set, else
``<model_folder>/totalseg``, in the folder nnU-Net expects:
``Dataset<id>_*/<trainer>__<plans>__<configuration>/fold_<n>/checkpoint_final.pth``
(``totalseg_download_weights -t <task>`` with ``TOTALSEG_WEIGHTS_PATH`` set writes exactly that).

Tasks made of several models run one after another and merged (``total``, ``total_mr``,
``headneck_muscles``) are refused: configure ``total_fast`` / ``total_fastest`` or each part as its
own model. TotalSegmentator's own pre-processing (resampling before nnU-Net, cropping to another
task's output) is not reproduced: nnU-Net resamples to the model's spacing itself, and tasks that
TotalSegmentator crops first (``crop`` below) still run on the whole image.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.errors import SpecError

logger = logging.getLogger(__name__)

WEIGHTS_ENV = "TOTALSEG_WEIGHTS_PATH"
_MODES = ("fastest", "fast")


@dataclass(frozen=True)
class TotalSegTask:
    """One single-model TotalSegmentator task resolved to an nnU-Net model folder."""

    task: str
    base_task: str
    mode: str | None
    dataset_id: int
    trainer: str
    plans: str
    configuration: str
    folds: tuple[int, ...] | None
    labels: dict[int, str]
    model_dir: Path
    crop: tuple[str, ...]
    resample: tuple[float, ...] | float | None


def weights_root(model_folder: Path, environ: Mapping[str, str]) -> Path:
    """``$TOTALSEG_WEIGHTS_PATH`` if set, else ``<model_folder>/totalseg``."""
    configured = environ.get(WEIGHTS_ENV)
    return Path(configured) if configured else Path(model_folder) / "totalseg"


def _tables() -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[int, str]]]:
    try:
        from totalsegmentator.map_tasks_config import DEFAULT_CONFIG, TASK_CONFIGS
        from totalsegmentator.map_to_binary import class_map
    except ImportError as exc:
        raise SpecError(f"totalseg_task needs the totalsegmentator package: {exc}") from exc
    return dict(DEFAULT_CONFIG), dict(TASK_CONFIGS), dict(class_map)


def known_tasks() -> list[str]:
    """Every task name :func:`resolve_task` accepts (single-model tasks and their fast modes)."""
    _, configs, _ = _tables()
    names: list[str] = []
    for name, config in configs.items():
        if "sub_modes" in config:
            for mode, sub in config["sub_modes"].items():
                if _single_id(sub.get("task_id")) is not None:
                    names.append(name if mode == "default" else f"{name}_{mode}")
        elif _single_id(config.get("task_id")) is not None:
            names.append(name)
    return sorted(names)


def _single_id(task_id: Any) -> int | None:
    if isinstance(task_id, int):
        return task_id
    if isinstance(task_id, list) and len(task_id) == 1 and isinstance(task_id[0], int):
        return task_id[0]
    return None


def _split_mode(task: str, configs: Mapping[str, Any]) -> tuple[str, str | None]:
    if task in configs:
        return task, None
    for mode in _MODES:
        suffix = f"_{mode}"
        base = task.removesuffix(suffix)
        if task.endswith(suffix) and base in configs:
            if mode not in configs[base].get("sub_modes", {}):
                raise SpecError(f"TotalSegmentator task {base!r} has no {mode!r} mode")
            return base, mode
    close = difflib.get_close_matches(task, known_tasks(), n=5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SpecError(f"unknown TotalSegmentator task {task!r}{hint}")


def resolve_task(task: str, root: Path) -> TotalSegTask:
    """Resolve ``task`` to its dataset id, nnU-Net configuration, labels and weights folder."""
    defaults, configs, class_map = _tables()
    base, mode = _split_mode(task, configs)
    raw = configs[base]
    config = dict(defaults)
    if "sub_modes" in raw:
        config.update(raw["sub_modes"][mode or "default"])
    else:
        config.update(raw)
    task_id = config.get("task_id")
    dataset_id = _single_id(task_id)
    if dataset_id is None:
        ids = ", ".join(str(i) for i in task_id) if isinstance(task_id, list) else repr(task_id)
        fast = [f"{base}_{m}" for m in _MODES if m in raw.get("sub_modes", {})]
        alternative = f"use {' or '.join(fast)}, or " if fast else ""
        raise SpecError(
            f"TotalSegmentator task {task!r} runs several models (datasets {ids}) and merges them; "
            f"that is not supported: {alternative}configure each part as its own model"
        )
    if base not in class_map:
        raise SpecError(f"TotalSegmentator has no label map for task {base!r}")
    labels = {int(k): str(v) for k, v in sorted(class_map[base].items())}
    trainer = str(config.get("trainer") or "nnUNetTrainer")
    plans = str(config.get("plans") or "nnUNetPlans")
    configuration = str(config.get("model") or "3d_fullres")
    model_dir = _find_model_dir(task, root, dataset_id, f"{trainer}__{plans}__{configuration}")
    folds = config.get("folds")
    crop = config.get("crop") or ()
    resample = config.get("resample")
    if crop:
        logger.warning(
            "TotalSegmentator task %s is cropped to %s before inference in TotalSegmentator; "
            "here it runs on the whole image",
            task,
            crop if isinstance(crop, str) else ", ".join(crop),
        )
    return TotalSegTask(
        task=task,
        base_task=base,
        mode=mode,
        dataset_id=dataset_id,
        trainer=trainer,
        plans=plans,
        configuration=configuration,
        folds=tuple(int(f) for f in folds) if folds else None,
        labels=labels,
        model_dir=model_dir,
        crop=(crop,) if isinstance(crop, str) else tuple(crop),
        resample=tuple(resample) if isinstance(resample, list) else resample,
    )


def _find_model_dir(task: str, root: Path, dataset_id: int, leaf: str) -> Path:
    pattern = f"Dataset{dataset_id:03d}_*"
    datasets = sorted(p for p in root.glob(pattern) if p.is_dir()) if root.is_dir() else []
    if not datasets:
        raise SpecError(
            f"TotalSegmentator task {task!r}: no weights folder {root / pattern} (dataset {dataset_id}; "
            f"download it with TotalSegmentator's totalseg_download_weights and {WEIGHTS_ENV}={root})"
        )
    if len(datasets) > 1:
        names = ", ".join(p.name for p in datasets)
        raise SpecError(f"TotalSegmentator task {task!r}: several weights folders match {pattern}: {names}")
    model_dir = datasets[0] / leaf
    if not model_dir.is_dir():
        raise SpecError(f"TotalSegmentator task {task!r}: missing model folder {model_dir}")
    return model_dir
