"""Tiny nnU-Net results folders for spec-loading tests: dataset.json, plans.json and fold folders with
``torch.save``d random tensors (real zip checkpoints, so the fingerprint sees their content), and
helpers to write model-serve-spec.yaml files. Nothing here can run inference (see random_model.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DEFAULT_LABELS: tuple[str, ...] = ("background", "liver", "spleen")


def write_checkpoint(path: Path, seed: int, size: int = 50_000) -> None:
    """A torch zip checkpoint holding ``size`` random float32 weights (~``4 * size`` bytes)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = torch.from_numpy(rng.standard_normal(size).astype(np.float32))
    torch.save({"network_weights": {"w": weights}, "trainer_name": "nnUNetTrainer"}, path)


def make_model_folder(
    path: Path,
    *,
    labels: Sequence[str] | Mapping[str, Any] = DEFAULT_LABELS,
    channels: Sequence[str] = ("CT",),
    folds: Sequence[int | str] = (0,),
    checkpoints: Sequence[str] = ("checkpoint_final.pth",),
    seed: int = 0,
    plans: Mapping[str, Any] | None = None,
    size: int = 50_000,
) -> Path:
    """``path`` (named like ``Trainer__Plans__3d_fullres``) with dataset.json, plans.json and folds."""
    path.mkdir(parents=True, exist_ok=True)
    label_map = dict(labels) if isinstance(labels, Mapping) else {name: i for i, name in enumerate(labels)}
    dataset = {
        "channel_names": {str(i): name for i, name in enumerate(channels)},
        "labels": label_map,
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (path / "dataset.json").write_text(json.dumps(dataset, indent=1))
    (path / "plans.json").write_text(json.dumps(dict(plans or {"plans_name": "nnUNetPlans"}), indent=1))
    for index, fold in enumerate(folds):
        for checkpoint in checkpoints:
            write_checkpoint(path / f"fold_{fold}" / checkpoint, seed=seed * 1000 + index, size=size)
    return path


def write_spec(path: Path, spec: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(spec), sort_keys=False))
    return path
