"""Stand-in TotalSegmentator weights: random-weight nnU-Net models in the package's exact folder layout.

Everything about the layout comes from the installed ``totalsegmentator`` package's own tables, not from
the node: the dataset folder names (``map_tasks_config.TASK_ID_WEIGHTS_CONFIGS``), the trainer and the
configuration of each task (``TASK_CONFIGS``), the labels of each dataset (``map_to_binary.class_map``, or
the per-part class maps of the multi-part tasks). Each model's spacing is the one the task resamples to
(so nnU-Net's own resampling is a no-op, as with the real weights); patch and network are tiny so a
case runs in well under a second on a CPU.

Also :func:`offline_home`: a TotalSegmentator home folder whose ``config.json`` turns its usage
statistics off, for running the package's own API in tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.random_model import make_random_model

PLANS = "nnUNetPlans"
CONFIGURATION = "3d_fullres"

#: The rough models TotalSegmentator runs before cropping (python_api.totalsegmentator).
CROP_DATASETS = {
    298: ("nnUNetTrainer_4000epochs_NoMirroring", "total", 6.0),
    297: ("nnUNetTrainer_4000epochs_NoMirroring", "total", 3.0),
    300: ("nnUNetTrainer", "body", 6.0),
}


def _part_labels(task: str, dataset_id: int) -> dict[int, str]:
    import totalsegmentator.map_to_binary as binary

    tables = {
        "total": (binary.class_map_5_parts, binary.map_taskid_to_partname_ct),
        "total_mr": (binary.class_map_parts_mr, binary.map_taskid_to_partname_mr),
    }
    maps, names = tables[task]
    return dict(maps[names[dataset_id]])


def write_dataset(
    root: Path,
    dataset_id: int,
    trainer: str,
    labels: dict[int, str],
    spacing_xyz: Sequence[float],
    *,
    patch_size: Sequence[int] = (32, 32, 32),
    seed: int = 0,
) -> Path:
    """``root/<TotalSegmentator's folder name>/<trainer>__nnUNetPlans__3d_fullres`` with random weights."""
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS

    if sorted(labels) != list(range(1, len(labels) + 1)):
        raise ValueError(f"dataset {dataset_id}: label values are not 1..N")
    folder = root / TASK_ID_WEIGHTS_CONFIGS[dataset_id]["foldername"] / f"{trainer}__{PLANS}__{CONFIGURATION}"
    names = ["background", *(labels[i] for i in range(1, len(labels) + 1))]
    return make_random_model(
        folder,
        labels=names,
        patch_size=patch_size,
        spacing=tuple(float(s) for s in reversed(list(spacing_xyz))),
        seed=seed,
        mirror_axes=None,
    )


def write_task(
    root: Path,
    task: str,
    *,
    mode: str = "default",
    crop_datasets: Iterable[int] = (),
    patch_size: Sequence[int] = (32, 32, 32),
    seed: int = 0,
) -> list[Path]:
    """Stand-in weights for ``task`` (``mode``: default, fast or fastest) and the given crop datasets."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS
    from totalsegmentator.map_to_binary import class_map

    raw = TASK_CONFIGS[task]
    config = raw["sub_modes"][mode] if "sub_modes" in raw else raw
    ids = config["task_id"] if isinstance(config["task_id"], list) else [config["task_id"]]
    resample = config["resample"]
    spacing = [float(resample)] * 3 if isinstance(resample, int | float) else [float(v) for v in resample]
    written = []
    for index, dataset_id in enumerate(ids):
        labels = _part_labels(task, dataset_id) if len(ids) > 1 else dict(class_map[task])
        written.append(
            write_dataset(
                root, dataset_id, config["trainer"], labels, spacing, patch_size=patch_size, seed=seed + index
            )
        )
    for dataset_id in crop_datasets:
        trainer, crop_task, crop_spacing = CROP_DATASETS[dataset_id]
        written.append(
            write_dataset(
                root,
                dataset_id,
                trainer,
                dict(class_map[crop_task]),
                [crop_spacing] * 3,
                patch_size=(16, 16, 16),
                seed=seed + 100 + dataset_id,
            )
        )
    return written


def offline_home(folder: Path) -> Path:
    """A TOTALSEG_HOME_DIR whose config.json turns usage statistics off (and the notice already shown)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "totalseg_id": "totalseg_tests",
        "send_usage_stats": False,
        "prediction_counter": 0,
        "statistics_disclaimer_shown": True,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
