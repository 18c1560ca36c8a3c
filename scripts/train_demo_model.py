"""Train the tiny demo nnU-Net v2 model on synthetic phantoms, on CPU.

    .venv/bin/python scripts/train_demo_model.py   # writes into dicom_node/demo/data/models

Steps: write a raw nnU-Net dataset (Dataset801_Phantom, channel "CT", labels background / body /
liver / kidney) from :func:`dicom_node.demo.phantom.make_phantom` with randomised shapes around the
demo's size (z 24-40, y/x 56-80) at the demo spacing; run nnU-Net's fingerprint, planner and
3d_fullres preprocessing; shrink the planned network (few features, patch = the demo volume) so
the model stays far below 2 MB and predicts the demo volume as one tile; train the standard
``nnUNetTrainer`` (fold 0) for a short, fixed number of iterations; copy a trimmed model folder
(dataset.json, plans.json, fold_0/checkpoint_final.pth without optimizer state or logs) to
``<out>/Dataset801_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres``; finally print per-label Dice
on fresh phantoms (seeds never used for training).

All nnU-Net folders live in a temporary work folder (``--work`` to keep one). Not run in CI: the
trained folder is committed. Training is 36 epochs x 40 iterations (batch 2): roughly 15-20 minutes on
2 idle CPU cores (32 minutes measured, niced, on a shared and busy 2-core machine); run it with ``nice``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dicom_node.demo.bundled import demo_models_root  # noqa: E402
from dicom_node.demo.phantom import LABEL_NAMES, make_phantom  # noqa: E402

logger = logging.getLogger("train_demo_model")

DATASET_ID = 801
DATASET_NAME = "Dataset801_Phantom"
CONFIGURATION = "3d_fullres"
MODEL_SUBDIR = f"{DATASET_NAME}/nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
SPACING_XYZ = (6.0, 6.0, 8.0)
DEMO_SHAPE = (32, 64, 64)
# Network: a 4-stage plain U-Net with few features (about 0.17 M parameters, ~0.7 MB); the patch is the
# demo volume, so the demo predicts as a single tile with tile_step_size 1.0.
PATCH_SIZE = [32, 64, 64]
FEATURES = [8, 16, 24, 32]
STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
TRAIN_SEED_BASE = 1000
EVAL_SEED_BASE = 900_000
TARGET_DICE = 0.9


def random_shape(rng: np.random.Generator) -> tuple[int, int, int]:
    """A shape around the demo's: z 24-40, y and x 56-80 (the demo shape itself now and then)."""
    if rng.random() < 0.2:
        return DEMO_SHAPE
    return int(rng.integers(24, 41)), int(rng.integers(56, 81)), int(rng.integers(56, 81))


def write_raw_dataset(raw_root: Path, cases: int, seed: int) -> Path:
    """imagesTr/labelsTr NIfTI files and dataset.json for ``cases`` phantoms."""
    folder = raw_root / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(cases):
        phantom = make_phantom(shape=random_shape(rng), spacing=SPACING_XYZ, seed=TRAIN_SEED_BASE + i)
        for array, path in (
            (phantom.image, folder / "imagesTr" / f"Phantom_{i:03d}_0000.nii.gz"),
            (phantom.labels, folder / "labelsTr" / f"Phantom_{i:03d}.nii.gz"),
        ):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(phantom.spacing)
            sitk.WriteImage(image, str(path))
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {name: value for value, name in LABEL_NAMES.items()},
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "name": "Phantom",
        "description": "Synthetic abdominal phantoms (dicom_node.demo.phantom), nnU-Net DICOM node demo",
        "reference": "nnunet-dicom-node scripts/train_demo_model.py",
        "licence": "Apache-2.0",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    logger.info("wrote %d phantoms to %s", cases, folder)
    return folder


def shrink_plans(plans: dict[str, Any]) -> dict[str, Any]:
    """Replace the planned 3d_fullres network by the tiny one and drop other configurations."""
    config = plans["configurations"][CONFIGURATION]
    config["patch_size"] = PATCH_SIZE
    config["batch_size"] = 2
    arch = config["architecture"]["arch_kwargs"]
    n = len(FEATURES)
    arch["n_stages"] = n
    arch["features_per_stage"] = FEATURES
    arch["kernel_sizes"] = [[3, 3, 3]] * n
    arch["strides"] = STRIDES
    arch["n_conv_per_stage"] = [2] * n
    arch["n_conv_per_stage_decoder"] = [2] * (n - 1)
    plans["configurations"] = {CONFIGURATION: config}
    return plans


def plan_and_preprocess(preprocessed: Path) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True, verbose=False)
    plan_experiments([DATASET_ID])
    plans_file = preprocessed / DATASET_NAME / "nnUNetPlans.json"
    save_json(shrink_plans(load_json(str(plans_file))), str(plans_file), sort_keys=False)
    preprocess([DATASET_ID], configurations=(CONFIGURATION,), num_processes=(1,), verbose=False)


def train(preprocessed: Path, epochs: int, iterations: int) -> Path:
    """Train fold 0 on CPU; return the trainer's output folder base."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    plans = load_json(str(preprocessed / DATASET_NAME / "nnUNetPlans.json"))
    plans["continue_training"] = False  # nnunetv2 2.8 reads (and pops) this key
    dataset_json = load_json(str(preprocessed / DATASET_NAME / "dataset.json"))
    trainer = nnUNetTrainer(
        plans=plans,
        configuration=CONFIGURATION,
        fold=0,
        dataset_json=dataset_json,
        device=torch.device("cpu"),
    )
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = max(2, iterations // 10)
    trainer.run_training()
    return Path(trainer.output_folder_base)


def export_trimmed(trained: Path, out_root: Path) -> Path:
    """Copy dataset.json, plans.json and a weights-only fold_0/checkpoint_final.pth."""
    target = out_root / MODEL_SUBDIR
    if target.exists():
        shutil.rmtree(target)
    (target / "fold_0").mkdir(parents=True)
    shutil.copyfile(trained / "dataset.json", target / "dataset.json")
    shutil.copyfile(trained / "plans.json", target / "plans.json")
    checkpoint = torch.load(
        trained / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False
    )
    trimmed = {
        "network_weights": checkpoint["network_weights"],
        "init_args": {"configuration": checkpoint["init_args"]["configuration"], "fold": 0},
        "trainer_name": checkpoint["trainer_name"],
        "inference_allowed_mirroring_axes": checkpoint["inference_allowed_mirroring_axes"],
        "current_epoch": checkpoint["current_epoch"],
    }
    torch.save(trimmed, target / "fold_0" / "checkpoint_final.pth")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    logger.info("exported %s (%.0f kB)", target, size / 1024)
    return target


def dice(prediction: np.ndarray, truth: np.ndarray, label: int) -> float:
    a, b = prediction == label, truth == label
    denominator = int(a.sum()) + int(b.sum())
    return 1.0 if denominator == 0 else 2.0 * int((a & b).sum()) / denominator


def evaluate(model_dir: Path, cases: int) -> dict[int, list[float]]:
    """Dice per label on fresh phantoms: CPU, no mirroring, tile step 1.0."""
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
    predictor.initialize_from_trained_model_folder(
        str(model_dir), use_folds=(0,), checkpoint_name="checkpoint_final.pth"
    )
    rng = np.random.default_rng(EVAL_SEED_BASE)
    scores: dict[int, list[float]] = {label: [] for label in LABEL_NAMES if label}
    for i in range(cases):
        shape = DEMO_SHAPE if i == 0 else random_shape(rng)
        phantom = make_phantom(shape=shape, spacing=SPACING_XYZ, seed=EVAL_SEED_BASE + i)
        start = time.perf_counter()
        prediction = predictor.predict_single_npy_array(
            phantom.image[None].astype(np.float32), {"spacing": list(SPACING_XYZ[::-1])}, None, None, False
        )
        elapsed = time.perf_counter() - start
        row = {label: dice(np.asarray(prediction), phantom.labels, label) for label in scores}
        for label, value in row.items():
            scores[label].append(value)
        shown = "  ".join(f"{LABEL_NAMES[label]} {value:.3f}" for label, value in row.items())
        print(f"seed {EVAL_SEED_BASE + i} shape {shape}: {shown}  ({elapsed:.2f} s)")
    means = "  ".join(f"{LABEL_NAMES[label]} {np.mean(values):.3f}" for label, values in scores.items())
    print(f"mean Dice over {cases} fresh phantoms: {means}")
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=demo_models_root(),
        help="model_folder root (default: the package's dicom_node/demo/data/models, shipped in the wheel)",
    )
    parser.add_argument("--work", type=Path, help="keep nnU-Net's raw/preprocessed/results folders here")
    parser.add_argument("--cases", type=int, default=40, help="training phantoms")
    parser.add_argument("--epochs", type=int, default=36)
    parser.add_argument("--iterations", type=int, default=40, help="iterations per epoch")
    parser.add_argument("--eval-cases", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    work = args.work or Path(tempfile.mkdtemp(prefix="nnunet-demo-"))
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(work / name)
    # The planner calls torch.set_num_threads(n_proc_DA), which refuses 0: set it to 0 only for training.
    os.environ["nnUNet_n_proc_DA"] = "1"  # noqa: SIM112 (nnU-Net reads this exact name)
    os.environ["nnUNet_compile"] = "false"  # noqa: SIM112
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    started = time.perf_counter()
    try:
        write_raw_dataset(work / "nnUNet_raw", args.cases, args.seed)
        plan_and_preprocess(work / "nnUNet_preprocessed")
        logger.info("planned and preprocessed in %.0f s", time.perf_counter() - started)
        # Data augmentation in the main process: fastest on 2 cores.
        os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112
        trained = train(work / "nnUNet_preprocessed", args.epochs, args.iterations)
        logger.info("trained in %.0f s in total", time.perf_counter() - started)
        model_dir = export_trimmed(trained, args.out)
        scores = evaluate(model_dir, args.eval_cases)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    logger.info("done in %.0f s", time.perf_counter() - started)
    weak = [LABEL_NAMES[label] for label, values in scores.items() if np.mean(values) < TARGET_DICE]
    if weak:
        logger.error("mean Dice below %.2f for %s: train longer (--epochs)", TARGET_DICE, ", ".join(weak))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
