"""The committed demo model (package data under dicom_node/demo/data, trained by
scripts/train_demo_model.py) and its spec entries (the shipped spec and the repository's top-level
one, kept equal): small, trimmed, and segmenting a fresh phantom well with nnU-Net's own predictor
on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from dicom_node.demo.bundled import demo_model_dir, demo_model_spec
from dicom_node.demo.phantom import LABEL_NAMES, make_phantom

REPO = Path(__file__).resolve().parents[3]
MODEL_DIR = demo_model_dir()
SPECS = {"shipped": demo_model_spec(), "top-level": REPO / "model-serve-spec.yaml"}
FRESH_SEED = 424_242  # never used for training (training seeds 1000+, evaluation 900000+)


def _dice(prediction: np.ndarray, truth: np.ndarray, label: int) -> float:
    a, b = prediction == label, truth == label
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_model_folder_is_complete_small_and_trimmed() -> None:
    files = {p.relative_to(MODEL_DIR).as_posix() for p in MODEL_DIR.rglob("*") if p.is_file()}
    assert files == {"dataset.json", "plans.json", "fold_0/checkpoint_final.pth"}
    size = sum((MODEL_DIR / f).stat().st_size for f in files)
    assert size < 2 * 1024 * 1024, f"model folder is {size} bytes"
    dataset = json.loads((MODEL_DIR / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"}
    assert {int(v): k for k, v in dataset["labels"].items()} == LABEL_NAMES
    checkpoint = torch.load(
        MODEL_DIR / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False
    )
    assert "optimizer_state" not in checkpoint and "logging" not in checkpoint
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"


def demo_entry(path: Path) -> tuple[dict[str, Any], Path]:
    """The spec's demo entry and the model folder it names."""
    spec = yaml.safe_load(path.read_text())
    (demo,) = [m for m in spec["models"] if m["id"] == "demo"]
    return demo, (path.parent / spec["model_folder"] / demo["rel_path"]).resolve()


def test_the_top_level_spec_serves_the_shipped_demo_model_as_the_shipped_spec_does() -> None:
    shipped, shipped_dir = demo_entry(SPECS["shipped"])
    top, top_dir = demo_entry(SPECS["top-level"])
    assert top == shipped
    assert top_dir == shipped_dir == MODEL_DIR.resolve()


@pytest.mark.parametrize("which", sorted(SPECS))
def test_spec_demo_entry_points_at_the_model(which: str) -> None:
    demo, model_dir = demo_entry(SPECS[which])
    assert model_dir == MODEL_DIR.resolve()
    assert "phantom" in demo["aliases"]
    assert demo["default_args"]["use_folds"] == [0]
    assert demo["default_args"]["tta"] is False
    segments = demo["metadata"]["segment_names"]
    # Segment i describes label value i of the model's dataset.json.
    assert [s["number"] for s in segments] == [1, 2, 3]
    assert [s["code"] for s in segments] == ["38266002", "10200004", "64033007"]
    assert {s["category_number"] for s in segments} == {"91723000"}


@pytest.mark.slow
def test_predictor_segments_a_fresh_phantom() -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=1.0,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(MODEL_DIR), use_folds=(0,))
    phantom = make_phantom(seed=FRESH_SEED)
    sx, sy, sz = phantom.spacing
    prediction = predictor.predict_single_npy_array(
        phantom.image[None].astype(np.float32), {"spacing": [sz, sy, sx]}, None, None, False
    )
    prediction = np.asarray(prediction)
    assert prediction.shape == phantom.labels.shape
    scores = {LABEL_NAMES[label]: _dice(prediction, phantom.labels, label) for label in (1, 2, 3)}
    assert min(scores.values()) >= 0.85, scores
