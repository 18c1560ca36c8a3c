"""Where TotalSegmentator weights are, checked at load; never downloaded.

``$TOTALSEG_WEIGHTS_PATH`` if set, else ``<model_folder>/totalseg`` if that folder exists, else
TotalSegmentator's home (``$TOTALSEG_HOME_DIR`` or ``~/.totalsegmentator``) ``/nnunet/results`` - the
folders the package itself reads (``config.get_weights_dir``). A dataset is the folder the package
downloads it to (``map_tasks_config.TASK_ID_WEIGHTS_CONFIGS``), or the one ``Dataset<id>_*`` folder
there (nnU-Net's own lookup).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from inference.errors import SpecError

WEIGHTS_ENV = "TOTALSEG_WEIGHTS_PATH"
HOME_ENV = "TOTALSEG_HOME_DIR"
CHECKPOINT = "checkpoint_final.pth"


def weights_root(model_folder: Path, environ: Mapping[str, str]) -> Path:
    """Where TotalSegmentator weights are looked up (see the module doc)."""
    configured = environ.get(WEIGHTS_ENV)
    if configured:
        return Path(configured)
    local = Path(model_folder) / "totalseg"
    if local.is_dir():
        return local
    home = environ.get(HOME_ENV)
    if home:
        return Path(home) / "nnunet" / "results"
    user_home = Path.home()
    return (Path("/tmp") if str(user_home) == "/" else user_home) / ".totalsegmentator" / "nnunet" / "results"


def dataset_dir(task: str, root: Path, dataset_id: int) -> Path:
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS

    info = TASK_ID_WEIGHTS_CONFIGS.get(dataset_id, {})
    expected = Path(info.get("rel_path") or "") / info["foldername"] if "foldername" in info else None
    if expected is not None and (root / expected).is_dir():
        return root / expected
    pattern = f"Dataset{dataset_id:03d}_*"
    found = sorted(p for p in root.glob(pattern) if p.is_dir()) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise SpecError(
            f"TotalSegmentator task {task!r}: several weights folders match {root / pattern}: {names}"
        )
    name = expected.as_posix() if expected is not None else pattern
    licence = ""
    if dataset_id in set(TASK_ID_WEIGHTS_CONFIGS) and "version" not in info:
        licence = " (licensed weights: set a licence with totalseg_set_license before downloading)"
    raise SpecError(
        f"TotalSegmentator task {task!r}: dataset {dataset_id} ({name}) not found in {root}; "
        f"download it with TotalSegmentator's totalseg_download_weights{licence} and "
        f"{WEIGHTS_ENV}={root} (the node never downloads)"
    )


def check_model_dir(
    task: str, model_dir: Path, folds: tuple[int, ...] | Literal["all"], labels: Mapping[int, str]
) -> None:
    if not model_dir.is_dir():
        raise SpecError(f"TotalSegmentator task {task!r}: missing model folder {model_dir}")
    try:
        dataset = json.loads((model_dir / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(
            f"TotalSegmentator task {task!r}: unreadable {model_dir / 'dataset.json'}: {exc}"
        ) from exc
    found = {
        int(v): str(k) for k, v in dict(dataset.get("labels", {})).items() if isinstance(v, int) and v > 0
    }
    for value, name in labels.items():
        if found.get(value) != name:
            raise SpecError(
                f"TotalSegmentator task {task!r}: {model_dir / 'dataset.json'} label {value} is "
                f"{found.get(value)!r}, TotalSegmentator's class map says {name!r}"
            )
    if folds == "all":
        if not list(model_dir.glob(f"fold_*/{CHECKPOINT}")):
            raise SpecError(f"TotalSegmentator task {task!r}: no fold_*/{CHECKPOINT} in {model_dir}")
        return
    for fold in folds:
        if not (model_dir / f"fold_{fold}" / CHECKPOINT).is_file():
            raise SpecError(
                f"TotalSegmentator task {task!r}: missing {model_dir / f'fold_{fold}' / CHECKPOINT}"
            )
