"""A hand-built nnU-Net v2 model folder with random weights, for plumbing tests.

``plans.json``, ``dataset.json`` and ``fold_<f>/checkpoint_*.pth`` are written the way nnU-Net's
predictor reads them (network_weights, init_args['configuration'], trainer_name,
inference_allowed_mirroring_axes). The weights are random (seeded), so the output is useless as a
segmentation but deterministic, which is all plumbing and parity tests need.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

CONFIGURATION = "3d_fullres"
TRAINER = "nnUNetTrainer"


def _plans(patch_size: Sequence[int], spacing: Sequence[float], n_channels: int) -> dict[str, object]:
    n_stages = 3
    arch_kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n_stages,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1] * n_stages,
        "n_conv_per_stage_decoder": [1] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    intensity = {
        str(c): {
            "max": 3000.0,
            "mean": 50.0,
            "median": 40.0,
            "min": -1024.0,
            "percentile_00_5": -1000.0,
            "percentile_99_5": 1000.0,
            "std": 300.0,
        }
        for c in range(n_channels)
    }
    return {
        "dataset_name": "Dataset990_Random",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": list(patch_size),
                "spacing": list(spacing),
                "normalization_schemes": ["CTNormalization"] * n_channels,
                "use_mask_for_norm": [False] * n_channels,
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {
                    "is_seg": False,
                    "order": 3,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_seg_kwargs": {
                    "is_seg": True,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": arch_kwargs,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensity,
    }


def make_random_model(
    folder: Path,
    *,
    labels: Sequence[str] = ("background", "body", "liver", "kidney"),
    channels: Sequence[str] = ("CT",),
    patch_size: Sequence[int] = (16, 32, 32),
    spacing: Sequence[float] = (8.0, 6.0, 6.0),
    folds: Sequence[int | str] = (0,),
    checkpoints: Sequence[str] = ("checkpoint_final.pth",),
    seed: int = 0,
    mirror_axes: tuple[int, ...] | None = (0, 1, 2),
    finds_nothing: bool = False,
) -> Path:
    """Write a model folder (``trainer__plans__configuration`` layout) and return it.

    ``spacing`` and ``patch_size`` are nnU-Net's (z, y, x). Each fold gets different weights
    (seed + fold number), each checkpoint of a fold the same weights. ``finds_nothing``: a huge
    background bias on the output layer, so every voxel is background.
    """
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder.mkdir(parents=True, exist_ok=True)
    plans = _plans(patch_size, spacing, len(channels))
    dataset = {
        "channel_names": {str(i): name for i, name in enumerate(channels)},
        "labels": {name: i for i, name in enumerate(labels)},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    config = PlansManager(plans).get_configuration(CONFIGURATION)
    import pydoc

    kwargs = dict(config.network_arch_init_kwargs)
    for key in config.network_arch_init_kwargs_req_import:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    for index, fold in enumerate(folds):
        torch.manual_seed(seed + (index if isinstance(fold, str) else int(fold)) * 7919)
        network = PlainConvUNet(input_channels=len(channels), num_classes=len(labels), **kwargs)
        # Random init leaves the output nearly constant; widen the spread so argmax varies in space.
        with torch.no_grad():
            for param in network.parameters():
                param.mul_(3.0)
        state = {k: v.clone() for k, v in network.state_dict().items()}
        if finds_nothing:
            last = max(k for k in state if k.startswith("decoder.seg_layers.") and k.endswith(".bias"))
            state[last][0] += 200.0  # fp16 logits x Gaussian weight (10) stay finite
        fold_dir = folder / f"fold_{fold}"
        fold_dir.mkdir(exist_ok=True)
        for name in checkpoints:
            checkpoint: dict[str, object] = {
                "network_weights": state,
                "init_args": {"configuration": CONFIGURATION, "fold": fold},
                "trainer_name": TRAINER,
            }
            if mirror_axes is not None:
                checkpoint["inference_allowed_mirroring_axes"] = mirror_axes
            torch.save(checkpoint, fold_dir / name)
    return folder


def write_random_spec(
    root: Path, models: dict[str, dict[str, object]], *, spec_name: str = "model-serve-spec.yaml"
) -> Path:
    """A model-serve-spec.yaml under ``root`` serving random-weights models.

    ``models``: id -> ``make_random_model`` keyword arguments plus optional spec keys
    ``aliases``, ``default_args``, ``min_mem``, ``metadata``. Each model goes to
    ``root/models/<id>/nnUNetTrainer__nnUNetPlans__3d_fullres``."""
    import yaml

    spec_keys = ("aliases", "default_args", "min_mem", "metadata")
    entries = []
    for model_id, options in models.items():
        build = {k: v for k, v in options.items() if k not in spec_keys}
        rel = f"{model_id}/nnUNetTrainer__nnUNetPlans__3d_fullres"
        make_random_model(root / "models" / rel, **build)  # type: ignore[arg-type]
        entry: dict[str, object] = {"id": model_id, "rel_path": rel, "min_mem": 100}
        entry.update({k: v for k, v in options.items() if k in spec_keys})
        entries.append(entry)
    path = root / spec_name
    path.write_text(yaml.safe_dump({"model_folder": "models", "models": entries}, sort_keys=False))
    return path
