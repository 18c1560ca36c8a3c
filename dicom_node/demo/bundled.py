"""The demo model and its model spec, shipped inside the package (``dicom_node/demo/data``, package
data in the wheel) and found with :mod:`importlib.resources`, so ``dicom-node demo`` and
``dicom-node predict`` work from an installed wheel exactly as from the checkout. Nothing here
depends on where the repository is.

Layout: ``data/model-serve-spec.yaml`` (the demo entry, ``model_folder: models``) and
``data/models/Dataset801_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres`` (plans.json, dataset.json,
fold_0/checkpoint_final.pth), written by ``scripts/train_demo_model.py``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from dicom_node.errors import DemoError

DEMO_DATASET = "Dataset801_Phantom"
DEMO_RESULTS = "nnUNetTrainer__nnUNetPlans__3d_fullres"


def data_dir() -> Path:
    """The package's ``demo/data`` folder on disk. nnU-Net reads model files by path, so a package
    imported from a zip archive (no folder on disk) is refused."""
    found = files("dicom_node.demo").joinpath("data")
    if not isinstance(found, Path):
        raise DemoError(
            f"dicom_node.demo's data is not a folder on disk ({found!r}); install the wheel unzipped"
        )
    return found


def demo_model_spec() -> Path:
    """The shipped ``model-serve-spec.yaml`` that serves the demo model (id ``demo``)."""
    return data_dir() / "model-serve-spec.yaml"


def demo_models_root() -> Path:
    """The shipped spec's ``model_folder``."""
    return data_dir() / "models"


def demo_model_dir() -> Path:
    """The demo model's nnU-Net results folder."""
    return demo_models_root() / DEMO_DATASET / DEMO_RESULTS
