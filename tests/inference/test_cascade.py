"""Cascade planning and execution on small synthetic arrays with exact expected outputs.

The stage runner here is a deterministic function of its inputs (the real predictor is exercised
in test_predictors and test_pipeline); it records what each stage was given."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from inference.args import InferenceArgs, StageArgs
from inference.cascade import (
    Stage,
    StageInput,
    crop_box,
    parse_stage_input,
    plan_stages,
    run_cascade,
)
from inference.errors import ArgsError, PredictionError
from inference.predictors import Prediction

SHAPE = (8, 10, 12)
SPACING = (1.0, 1.0, 2.0)


def args(**values: Any) -> StageArgs:
    return InferenceArgs(**values).for_stage(0)


@dataclass
class Call:
    model: str
    shapes: list[tuple[int, ...]]
    images: list[np.ndarray]
    tta: bool
    probabilities: bool


@dataclass
class FakeRunner:
    """Each model is a function of its input images returning (labels, probabilities)."""

    models: dict[str, Callable[[list[np.ndarray]], Prediction]]
    calls: list[Call] = field(default_factory=list)

    def __call__(
        self, stage: Stage, images: list[np.ndarray], spacing_xyz: Sequence[float], probabilities: bool
    ) -> Prediction:
        self.calls.append(
            Call(
                stage.model,
                [i.shape for i in images],
                [i.copy() for i in images],
                stage.args.tta,
                probabilities,
            )
        )
        return self.models[stage.model](images)


def box_mask(shape: tuple[int, ...], *slices: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[slices] = True
    return mask


def threshold_model(level: float, label: int = 1) -> Callable[[list[np.ndarray]], Prediction]:
    """Label ``label`` where the first input exceeds ``level``; probabilities 0.9 there, else 0.1."""

    def run(images: list[np.ndarray]) -> Prediction:
        fg = images[0] > level
        labels = np.where(fg, label, 0).astype(np.uint8)
        probs = np.zeros((label + 1, *fg.shape), dtype=np.float32)
        probs[label] = np.where(fg, 0.9, 0.1)
        probs[0] = 1 - probs[label]
        return Prediction(labels=labels, probabilities=probs)

    return run


def identity_channels(ch: dict[str, int]) -> Callable[[str], int]:
    return lambda model: ch[model]


def canonical(name: str) -> str:
    return {"organ-alias": "organ"}.get(name, name)


def test_parse_stage_input() -> None:
    assert parse_stage_input(0) == StageInput(series=0)
    assert parse_stage_input(" 2") == StageInput(series=2)
    assert parse_stage_input("from:organ") == StageInput(model="organ")
    assert parse_stage_input("from:organ=3") == StageInput(model="organ", label=3)
    assert parse_stage_input("from:organ[1]") == StageInput(model="organ", channel=1)
    assert str(parse_stage_input("from:organ[1]")) == "from:organ[1]"
    for bad in ("from:", "organ", "from:organ=x", "from:organ[1", -1):
        with pytest.raises(PredictionError, match="invalid stage input"):
            parse_stage_input(bad)


def test_plan_default_inputs_are_the_first_series() -> None:
    stages = plan_stages(
        ["organ", "lesion"],
        n_series=2,
        channels=identity_channels({"organ": 1, "lesion": 2}),
        canonical=canonical,
        stage_args=lambda m, i: args(),
    )
    assert [(s.model, [str(i) for i in s.inputs]) for s in stages] == [
        ("organ", ["0"]),
        ("lesion", ["0", "1"]),
    ]
    with pytest.raises(PredictionError, match="needs 2 input series, the request has 1"):
        plan_stages(
            ["lesion"],
            n_series=1,
            channels=identity_channels({"lesion": 2}),
            canonical=canonical,
            stage_args=lambda m, i: args(),
        )


def test_referenced_model_is_inserted_fed_the_first_inputs_of_the_stage() -> None:
    seen: list[int | None] = []

    def stage_args(model: str, index: int | None) -> StageArgs:
        seen.append(index)
        return args()

    stages = plan_stages(
        ["lesion"],
        n_series=2,
        channels=identity_channels({"organ": 1, "lesion": 3}),
        canonical=canonical,
        stage_args=stage_args,
        stage_inputs=[["1", "0", "from:organ-alias[1]"]],
    )
    assert [(s.model, s.inserted, [str(i) for i in s.inputs]) for s in stages] == [
        ("organ", True, ["1"]),
        ("lesion", False, ["1", "0", "from:organ[1]"]),
    ]
    assert seen == [None, 0]
    # organ's probability channel is used later, so organ keeps its probabilities; lesion does not need them
    assert [s.probabilities for s in stages] == [True, False]


def test_earlier_stage_is_not_inserted_again() -> None:
    stages = plan_stages(
        ["organ", "lesion"],
        n_series=1,
        channels=identity_channels({"organ": 1, "lesion": 2}),
        canonical=canonical,
        stage_args=lambda m, i: args(),
        stage_inputs=[["0"], ["0", "from:organ=1"]],
    )
    assert [s.model for s in stages] == ["organ", "lesion"]


def test_plan_errors_name_the_problem() -> None:
    kw: dict[str, Any] = {
        "channels": identity_channels({"organ": 1, "lesion": 2}),
        "canonical": canonical,
        "stage_args": lambda m, i: args(),
    }
    with pytest.raises(PredictionError, match="stage 0 lists 1"):
        plan_stages(["lesion"], n_series=1, stage_inputs=[["0"]], **kw)
    with pytest.raises(PredictionError, match="uses series 4; the request has 1"):
        plan_stages(["organ"], n_series=1, stage_inputs=[["4"]], **kw)
    with pytest.raises(PredictionError, match="its own output"):
        plan_stages(["lesion"], n_series=1, stage_inputs=[["from:organ", "0"]], **kw)
    with pytest.raises(PredictionError, match="no model requested"):
        plan_stages([], n_series=1, **kw)


def test_intersect_keeps_components_overlapping_the_previous_mask() -> None:
    image = np.zeros(SHAPE, dtype=np.float32)
    organ = box_mask(SHAPE, slice(0, 4), slice(0, 5), slice(0, 6))
    image[organ] = 50.0
    near = box_mask(SHAPE, slice(3, 6), slice(4, 7), slice(5, 8))  # 27 voxels, 1 inside organ: 0.037
    inside = box_mask(SHAPE, slice(1, 3), slice(1, 3), slice(1, 3))  # fully inside organ
    far = box_mask(SHAPE, slice(6, 8), slice(8, 10), slice(9, 12))
    image[near | far] = 200.0
    image[inside] = 200.0

    def organ_model(images: list[np.ndarray]) -> Prediction:
        return Prediction(labels=organ.astype(np.uint8))

    runner = FakeRunner({"organ": organ_model, "lesion": threshold_model(100.0, label=2)})
    stages = plan_stages(
        ["organ", "lesion"],
        n_series=1,
        channels=identity_channels({"organ": 1, "lesion": 1}),
        canonical=canonical,
        stage_args=lambda m, i: args(min_intersection=0.03),
    )
    results = run_cascade(stages, [image], SPACING, runner)
    np.testing.assert_array_equal(results[1].labels, np.where(inside | near, 2, 0))
    stages = [
        stages[0],
        Stage(model="lesion", inputs=stages[1].inputs, args=args(min_intersection=0.5)),
    ]
    results = run_cascade(stages, [image], SPACING, runner)
    np.testing.assert_array_equal(results[1].labels, np.where(inside, 2, 0))
    np.testing.assert_array_equal(results[0].labels, organ.astype(np.uint8))


@pytest.mark.parametrize(
    ("padding", "expected_box"),
    [
        (None, (slice(2, 4), slice(3, 6), slice(4, 8))),
        (1, (slice(1, 5), slice(2, 7), slice(3, 9))),
        (0.5, (slice(1, 5), slice(1, 8), slice(2, 10))),  # ceil(0.5 * 2), ceil(0.5 * 3), ceil(0.5 * 4)
        (10, (slice(0, 8), slice(0, 10), slice(0, 12))),  # clipped to the volume
    ],
)
def test_crop_box(padding: int | float | None, expected_box: tuple[slice, ...]) -> None:
    mask = box_mask(SHAPE, slice(2, 4), slice(3, 6), slice(4, 8))
    assert crop_box(mask, padding) == expected_box
    assert crop_box(np.zeros(SHAPE, dtype=bool), padding) is None


def test_crop_predicts_on_the_box_and_pastes_back() -> None:
    image = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    organ = box_mask(SHAPE, slice(2, 4), slice(3, 6), slice(4, 8))

    def organ_model(images: list[np.ndarray]) -> Prediction:
        return Prediction(labels=organ.astype(np.uint8))

    def everything(images: list[np.ndarray]) -> Prediction:
        ones = np.ones(images[0].shape, dtype=np.uint8)
        return Prediction(labels=ones, probabilities=np.stack([0 * ones, ones]).astype(np.float32))

    runner = FakeRunner({"organ": organ_model, "lesion": everything})
    stages = plan_stages(
        ["organ", "lesion"],
        n_series=1,
        channels=identity_channels({"organ": 1, "lesion": 1}),
        canonical=canonical,
        stage_args=lambda m, i: args(cascade_mode="crop", crop_padding=1, save_proba_map=True),
    )
    results = run_cascade(stages, [image], SPACING, runner)
    box = (slice(1, 5), slice(2, 7), slice(3, 9))
    assert runner.calls[1].shapes == [(4, 5, 6)]
    np.testing.assert_array_equal(runner.calls[1].images[0], image[box])
    np.testing.assert_array_equal(results[1].labels, box_mask(SHAPE, *box).astype(np.uint8))
    assert results[1].probabilities is not None
    np.testing.assert_array_equal(results[1].probabilities[1], box_mask(SHAPE, *box).astype(np.float32))


def test_crop_after_an_empty_stage_skips_the_model() -> None:
    runner = FakeRunner(
        {"organ": lambda im: Prediction(labels=np.zeros(SHAPE, np.uint8)), "lesion": pytest.fail}  # type: ignore[dict-item]
    )
    stages = plan_stages(
        ["organ", "lesion"],
        n_series=1,
        channels=identity_channels({"organ": 1, "lesion": 1}),
        canonical=canonical,
        stage_args=lambda m, i: args(cascade_mode="crop"),
    )
    results = run_cascade(stages, [np.zeros(SHAPE, np.float32)], SPACING, runner)
    assert [c.model for c in runner.calls] == ["organ"]
    assert results[1].empty and "found nothing to crop to" in results[1].warnings[0]


def test_stage_inputs_from_labels_masks_and_probabilities() -> None:
    image = np.zeros(SHAPE, dtype=np.float32)
    image[2:5, 2:6, 2:8] = 50.0
    image[3, 3, 3] = 500.0

    def two_labels(images: list[np.ndarray]) -> Prediction:
        labels = np.where(images[0] > 100, 2, np.where(images[0] > 10, 1, 0)).astype(np.uint8)
        probs = np.stack([labels == 0, labels == 1, labels == 2]).astype(np.float32) * 0.75
        return Prediction(labels=labels, probabilities=probs)

    def echo(images: list[np.ndarray]) -> Prediction:
        return Prediction(labels=np.zeros(SHAPE, np.uint8))

    runner = FakeRunner({"organ": two_labels, "lesion": echo})
    stages = plan_stages(
        ["lesion"],
        n_series=1,
        channels=identity_channels({"organ": 1, "lesion": 4}),
        canonical=canonical,
        stage_args=lambda m, i: args(),
        stage_inputs=[["0", "from:organ", "from:organ=2", "from:organ[1]"]],
    )
    run_cascade(stages, [image], SPACING, runner)
    organ_labels = two_labels([image]).labels
    got = runner.calls[1].images
    np.testing.assert_array_equal(got[0], image)
    np.testing.assert_array_equal(got[1], organ_labels.astype(np.float32))
    np.testing.assert_array_equal(got[2], (organ_labels == 2).astype(np.float32))
    np.testing.assert_array_equal(got[3], (organ_labels == 1) * np.float32(0.75))
    assert runner.calls[0].probabilities is True


def test_each_stage_uses_its_own_arguments() -> None:
    image = np.zeros(SHAPE, dtype=np.float32)
    image[1:7, 1:9, 1:11] = 50.0
    image[2:5, 2:5, 2:5] = 500.0
    per_stage = {0: args(tta=True), 1: args(tta=False, proba_threshold=0.5)}
    runner = FakeRunner({"organ": threshold_model(10.0), "lesion": threshold_model(100.0, label=1)})
    stages = plan_stages(
        ["organ", "lesion"],
        n_series=1,
        channels=identity_channels({"organ": 1, "lesion": 1}),
        canonical=canonical,
        stage_args=lambda m, i: per_stage[i or 0],
    )
    results = run_cascade(stages, [image], SPACING, runner)
    assert [(c.model, c.tta, c.probabilities) for c in runner.calls] == [
        ("organ", True, False),
        ("lesion", False, True),
    ]
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[2:5, 2:5, 2:5] = 1  # 27 voxels > 10, probability 0.9 >= 0.5, inside the organ
    np.testing.assert_array_equal(results[1].labels, expected)


def test_crop_padding_per_axis_is_x_y_z() -> None:
    mask = box_mask(SHAPE, slice(2, 4), slice(3, 6), slice(4, 8))
    # x gets 3, y 1, z 0 voxels per side
    assert crop_box(mask, (3, 1, 0)) == (slice(2, 4), slice(2, 7), slice(1, 11))
    stage = InferenceArgs(crop_padding=[3, 1, 0]).for_stage(0)
    assert stage.crop_padding == (3, 1, 0)
    per_stage = InferenceArgs(crop_padding=[None, [3, 1, 0]])
    assert per_stage.stage_counts() == {"crop_padding": 2}
    assert per_stage.for_stage(1).crop_padding == (3, 1, 0) and per_stage.for_stage(0).crop_padding is None


def three_stage_runner() -> tuple[FakeRunner, np.ndarray, np.ndarray, np.ndarray]:
    """organ finds a big box (label 1) holding a small box (label 2); lesion finds two blobs, one
    inside the small box, one inside the big box only."""
    organ = np.zeros(SHAPE, dtype=np.uint8)
    organ[0:6, 0:8, 0:10] = 1
    organ[1:3, 1:3, 1:3] = 2
    in_small = box_mask(SHAPE, slice(1, 3), slice(1, 3), slice(1, 3))
    in_big = box_mask(SHAPE, slice(4, 6), slice(5, 7), slice(6, 9))

    def lesion(images: list[np.ndarray]) -> Prediction:
        full = np.zeros(images[0].shape, dtype=np.uint8)
        if images[0].shape == SHAPE:
            full[in_small | in_big] = 1
        return Prediction(labels=full)

    runner = FakeRunner({"organ": lambda im: Prediction(labels=organ), "lesion": lesion, "other": lesion})
    return runner, organ, in_small, in_big


def plan3(**values: Any) -> list[Stage]:
    return plan_stages(
        ["organ", "other", "lesion"],
        n_series=1,
        channels=identity_channels({"organ": 1, "lesion": 1, "other": 1}),
        canonical=canonical,
        stage_args=lambda m, i: InferenceArgs(**values).for_stage(i or 0),
    )


def test_intersect_with_names_the_mask_instead_of_the_previous_stage() -> None:
    runner, _, in_small, in_big = three_stage_runner()
    # lesion intersected with organ's label 2, not with "other" (the stage just before)
    stages = plan3(intersect_with=[None, None, "from:organ-alias=2"], min_intersection=0.5)
    assert stages[2].args.intersect_with == "from:organ=2"
    results = run_cascade(stages, [np.zeros(SHAPE, np.float32)], SPACING, runner)
    np.testing.assert_array_equal(results[2].labels, in_small.astype(np.uint8))
    np.testing.assert_array_equal(results[1].labels, (in_small | in_big).astype(np.uint8))


def test_crop_from_names_the_mask_to_crop_to() -> None:
    runner, _, _, _ = three_stage_runner()
    stages = plan3(cascade_mode="crop", crop_from=[None, None, "from:organ=2"])
    run_cascade(stages, [np.zeros(SHAPE, np.float32)], SPACING, runner)
    assert runner.calls[-1].model == "lesion" and runner.calls[-1].shapes == [(2, 2, 2)]


def test_mask_references_must_be_earlier_stages_of_the_matching_mode() -> None:
    with pytest.raises(ArgsError, match="intersect_with 'from:lesion' names no earlier stage"):
        plan3(intersect_with=[None, "from:lesion", None])
    with pytest.raises(ArgsError, match="crop_from needs cascade_mode 'crop'"):
        plan3(crop_from="from:organ")
    with pytest.raises(ValueError, match="from:<model> or from:<model>=k"):
        InferenceArgs(intersect_with="from:organ[1]")


def test_remove_objects_smaller_than_in_argmax_and_threshold_modes() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[0:2, 0:2, 0:2] = 1  # 8 voxels
    labels[5:7, 5:8, 5:8] = 1  # 18 voxels
    labels[0, 9, 11] = 2  # 1 voxel
    probs = np.stack([labels == 0, labels == 1, labels == 2]).astype(np.float32)
    runner = FakeRunner({"organ": lambda im: Prediction(labels=labels, probabilities=probs)})

    def run(**values: Any) -> np.ndarray:
        stages = plan_stages(
            ["organ"],
            n_series=1,
            channels=identity_channels({"organ": 1}),
            canonical=canonical,
            stage_args=lambda m, i: args(**values),
        )
        return run_cascade(stages, [np.zeros(SHAPE, np.float32)], SPACING, runner)[0].labels

    np.testing.assert_array_equal(
        run(remove_objects_smaller_than=9),
        np.where(labels == 1, labels, 0) * (np.arange(SHAPE[0]) >= 5)[:, None, None],
    )
    np.testing.assert_array_equal(run(remove_objects_smaller_than=2), np.where(labels == 1, 1, 0))
    # with a threshold it replaces the fixed minimum (components of <= 10 voxels dropped)
    assert run(proba_threshold=0.5).sum() == 18
    assert run(proba_threshold=0.5, remove_objects_smaller_than=1).sum() == 18 + 8 + 2


def test_series_folders_map_stages_and_folder_names() -> None:
    given = InferenceArgs(series_folders=[["t2", "adc"], ["1", "from:organ=2"]])
    assert given.stage_inputs() == [[0, 1], ["1", "from:organ=2"]]
    assert InferenceArgs(series_folders=["ct", "from:organ"]).stage_inputs() == [[0, "from:organ"]]
    with pytest.raises(ValueError, match="valid list"):
        InferenceArgs(series_folders=[["ct"], "late"])
    with pytest.raises(ValueError, match="invalid stage input"):
        InferenceArgs(series_folders=[["from:organ=x"]])
