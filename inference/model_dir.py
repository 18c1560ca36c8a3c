"""nnU-Net v2 results folders: finding them, reading what they hold, fingerprinting them.

A model folder (``<trainer>__<plans>__<configuration>``) holds ``dataset.json``, ``plans.json`` and
``fold_<n>/`` (or ``fold_all/``) folders with ``*.pth`` checkpoints.

Fingerprint (part of the model ``version``, hence of the deterministic SEG UIDs): SHA-256 over
``dataset.json`` and ``plans.json`` bytes and, for every checkpoint, its fold, name, size and its
first and last 64 KiB. A checkpoint is a zip archive whose tail is the central directory with a
CRC-32 of every stored tensor, so retraining changes the fingerprint while copying the folder
(new mtimes) does not, and start-up never reads whole multi-GB checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.errors import SpecError

logger = logging.getLogger(__name__)

Fold = int | str  # an int for fold_<n>, "all" for fold_all
_FOLD_RE = re.compile(r"^fold_(all|[0-9]+)$")
_CHUNK = 64 * 1024
_MAX_SEARCH_DEPTH = 6


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    dataset_json: dict[str, Any]
    folds: dict[Fold, tuple[str, ...]]  # fold -> checkpoint file names
    fingerprint: str
    trainer: str | None
    plans: str | None
    configuration: str | None


def list_folds(path: Path) -> dict[Fold, tuple[str, ...]]:
    """``fold_<n>`` / ``fold_all`` sub-folders and the ``*.pth`` files in each."""
    folds: dict[Fold, tuple[str, ...]] = {}
    try:
        children = sorted(path.iterdir())
    except OSError:
        return folds
    for child in children:
        match = _FOLD_RE.fullmatch(child.name)
        if match and child.is_dir():
            fold: Fold = "all" if match.group(1) == "all" else int(match.group(1))
            folds[fold] = tuple(sorted(p.name for p in child.glob("*.pth") if p.is_file()))
    return folds


def _is_model_dir(path: Path) -> bool:
    return bool(list_folds(path))


def find_model_dir(model_id: str, model_folder: Path, rel_path: str) -> Path:
    """``model_folder/rel_path`` if that is a model folder (it has fold folders or dataset.json), else
    the one model folder under ``model_folder`` whose relative path contains ``rel_path`` (nnunet_serve's
    substring rule, so ``Dataset300_body`` finds ``Dataset300_body/<trainer>__<plans>__<config>``); none
    or several is an error."""
    if Path(rel_path).is_absolute():
        raise SpecError(f"model {model_id!r}: rel_path must be relative to model_folder, got {rel_path!r}")
    exact = model_folder / rel_path
    if exact.is_dir() and (_is_model_dir(exact) or (exact / "dataset.json").exists()):
        return exact
    if not model_folder.is_dir():
        raise SpecError(f"model {model_id!r}: model_folder {model_folder} does not exist")
    matches = [p for p in _model_dirs(model_folder) if rel_path in p.relative_to(model_folder).as_posix()]
    if not matches:
        raise SpecError(
            f"model {model_id!r}: no model folder (one holding fold_N folders) under {model_folder} "
            f"matches rel_path {rel_path!r}"
        )
    if len(matches) > 1:
        names = ", ".join(str(p.relative_to(model_folder)) for p in sorted(matches))
        raise SpecError(f"model {model_id!r}: rel_path {rel_path!r} is ambiguous, it matches {names}")
    return matches[0]


def _model_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` holding fold_N folders (not descending into them), following links up to
    a fixed depth so a link loop cannot hang start-up."""
    found: list[Path] = []
    root_depth = len(root.parts)
    for current, dirs, _files in os.walk(root, followlinks=True):
        here = Path(current)
        if _is_model_dir(here):
            found.append(here)
            dirs[:] = []
            continue
        if len(here.parts) - root_depth >= _MAX_SEARCH_DEPTH:
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


def read_json(model_id: str, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"model {model_id!r}: missing {path.name} in {path.parent}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"model {model_id!r}: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"model {model_id!r}: {path} must hold a JSON object")
    return data


def open_model_folder(model_id: str, path: Path) -> ModelFolder:
    """Check and read a model folder; :class:`SpecError` names the model and what is missing."""
    if not path.is_dir():
        raise SpecError(f"model {model_id!r}: model folder {path} does not exist")
    dataset_json = read_json(model_id, path / "dataset.json")
    read_json(model_id, path / "plans.json")
    folds = list_folds(path)
    if not folds:
        raise SpecError(f"model {model_id!r}: no fold folders (fold_0, fold_all...) in {path}")
    if not any(folds.values()):
        raise SpecError(f"model {model_id!r}: no checkpoint (*.pth) in any fold folder of {path}")
    parts = path.name.split("__")
    trainer, plans, configuration = parts if len(parts) == 3 else (None, None, None)
    return ModelFolder(
        path=path,
        dataset_json=dataset_json,
        folds=folds,
        fingerprint=fingerprint(path, folds),
        trainer=trainer,
        plans=plans,
        configuration=configuration,
    )


def fingerprint(path: Path, folds: dict[Fold, tuple[str, ...]]) -> str:
    """Hex SHA-256 identifying the trained model (see the module docstring)."""
    digest = hashlib.sha256()
    for name in ("dataset.json", "plans.json"):
        data = (path / name).read_bytes()
        digest.update(f"{name}:{len(data)}:".encode())
        digest.update(data)
    for fold in sorted(folds, key=str):
        for checkpoint in folds[fold]:
            file = path / f"fold_{fold}" / checkpoint
            size = file.stat().st_size
            digest.update(f"fold_{fold}/{checkpoint}:{size}:".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(_CHUNK))
                if size > _CHUNK:
                    handle.seek(max(_CHUNK, size - _CHUNK))
                    digest.update(handle.read(_CHUNK))
    return digest.hexdigest()


def labels_from_dataset(model_id: str, dataset_json: dict[str, Any]) -> dict[int, str]:
    """Label value -> name from dataset.json ``labels`` (background, value 0, excluded). Values must be
    1..N without gaps (nnU-Net's own rule), so segment number = label value is always valid DICOM."""
    raw = dataset_json.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise SpecError(f"model {model_id!r}: dataset.json has no 'labels' mapping")
    labels: dict[int, str] = {}
    for name, value in raw.items():
        if isinstance(value, list | tuple):
            raise SpecError(
                f"model {model_id!r}: dataset.json label {name!r} is a region ({value}); "
                "region-based models are not supported"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SpecError(f"model {model_id!r}: dataset.json label {name!r} has invalid value {value!r}")
        if value in labels or (value == 0 and 0 in labels):
            raise SpecError(f"model {model_id!r}: dataset.json gives label value {value} twice")
        labels[value] = str(name)
    labels.pop(0, None)
    if not labels:
        raise SpecError(f"model {model_id!r}: dataset.json has no foreground labels")
    expected = list(range(1, len(labels) + 1))
    if sorted(labels) != expected:
        raise SpecError(
            f"model {model_id!r}: dataset.json label values must be 1..{len(labels)} without gaps, "
            f"got {sorted(labels)}"
        )
    return dict(sorted(labels.items()))


def channels_from_dataset(dataset_json: dict[str, Any]) -> dict[int, str]:
    """Input channel index -> name (``channel_names``, or the older ``modality``)."""
    raw = dataset_json.get("channel_names") or dataset_json.get("modality") or {}
    channels: dict[int, str] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            try:
                channels[int(key)] = str(value)
            except (TypeError, ValueError):
                continue
    return dict(sorted(channels.items()))
