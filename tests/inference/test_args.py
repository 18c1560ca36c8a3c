"""Inference arguments: defaults, validation messages, merge, per-stage values."""

from __future__ import annotations

from typing import Any

import pytest

from inference.args import InferenceArgs, merge, parse_args
from inference.errors import ArgsError


def test_defaults_match_nnunet_serve() -> None:
    stage = InferenceArgs().for_stage(0)
    assert stage.use_folds == (0,)
    assert stage.checkpoint_name == "checkpoint_final.pth"
    assert stage.tta is False
    assert stage.tile_step_size == 0.5
    assert stage.proba_threshold is None and stage.min_confidence is None and stage.class_idx is None
    assert stage.min_intersection == 0.1
    assert stage.cascade_mode == "intersect"
    assert stage.crop_padding is None
    assert not (stage.save_proba_map or stage.save_nifti_inputs or stage.save_nifti_output)
    assert stage.suffix is None and stage.bvalue_for_filtering is None


def test_merge_overrides_only_named_keys() -> None:
    defaults = parse_args({"use_folds": [0, 1, 2], "tta": True, "proba_threshold": 0.3})
    merged = merge(defaults, {"tta": False, "class_idx": 2})
    stage = merged.for_stage(0)
    assert stage.use_folds == (0, 1, 2)
    assert stage.tta is False
    assert stage.proba_threshold == 0.3
    assert stage.class_idx == (2,)
    assert merge(None, None) == InferenceArgs()
    assert merge(defaults, InferenceArgs(tile_step_size=1.0)).for_stage(0).use_folds == (0, 1, 2)


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ArgsError, match=r"unknown parameter\(s\) folds, ttta"):
        merge(None, {"ttta": True, "folds": [0]})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"tile_step_size": 0}, "tile_step_size must be in (0, 1]"),
        ({"tile_step_size": 1.2}, "tile_step_size must be in (0, 1]"),
        ({"proba_threshold": 1.5}, "proba_threshold must be in [0, 1]"),
        ({"min_confidence": -0.1}, "min_confidence must be in [0, 1]"),
        ({"min_intersection": [0.1, 2.0]}, "min_intersection must be in [0, 1]"),
        ({"use_folds": [0, 0]}, "lists a fold twice"),
        ({"use_folds": [-1]}, "fold numbers >= 0"),
        ({"use_folds": "some"}, "use_folds"),
        ({"class_idx": 0}, "class_idx must be label values >= 1"),
        ({"checkpoint_name": "../../etc/passwd.pth"}, "checkpoint_name must be a file name"),
        ({"checkpoint_name": "model.ckpt"}, "ending in .pth"),
        ({"cascade_mode": "concatenate"}, "cascade_mode"),
        ({"crop_padding": -3}, "crop_padding must be >= 0"),
        ({"suffix": "../x"}, "suffix must be"),
        ({"bvalue_for_filtering": -800}, "bvalue_for_filtering must be >= 0"),
    ],
)
def test_ranges_are_validated(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ArgsError) as info:
        parse_args(values)
    assert expected in str(info.value)


def test_per_stage_values() -> None:
    args = parse_args(
        {
            "use_folds": [[0, 1], "all"],
            "checkpoint_name": ["checkpoint_best.pth", "checkpoint_final.pth"],
            "proba_threshold": [None, 0.5],
            "class_idx": [None, [1, 2]],
            "cascade_mode": ["intersect", "crop"],
            "crop_padding": [None, 10],
            "tta": True,
        }
    )
    first, second = args.for_stage(0), args.for_stage(1)
    assert first.use_folds == (0, 1) and second.use_folds == "all"
    assert first.checkpoint_name == "checkpoint_best.pth" and second.checkpoint_name == "checkpoint_final.pth"
    assert first.proba_threshold is None and second.proba_threshold == 0.5
    assert first.class_idx is None and second.class_idx == (1, 2)
    assert second.cascade_mode == "crop" and second.crop_padding == 10
    assert first.tta and second.tta
    args.check_stages(2)
    with pytest.raises(ArgsError, match="use_folds has 2 per-stage values but the cascade has 3 stages"):
        args.check_stages(3)
    with pytest.raises(ArgsError, match="no value for stage 2"):
        args.for_stage(2)


def test_flat_lists_apply_to_every_stage() -> None:
    args = parse_args({"use_folds": [0, 1], "class_idx": [1, 2], "proba_threshold": 0.4})
    assert args.stage_counts() == {}
    for i in range(3):
        stage = args.for_stage(i)
        assert stage.use_folds == (0, 1) and stage.class_idx == (1, 2) and stage.proba_threshold == 0.4
    args.check_stages(5)


def test_crop_padding_int_is_voxels_float_is_fraction() -> None:
    assert isinstance(parse_args({"crop_padding": 10}).for_stage(0).crop_padding, int)
    assert isinstance(parse_args({"crop_padding": 0.25}).for_stage(0).crop_padding, float)


def test_json_schema_names_every_parameter() -> None:
    properties = InferenceArgs.model_json_schema()["properties"]
    assert {"use_folds", "checkpoint_name", "tta", "tile_step_size", "class_idx", "suffix"} <= set(properties)
