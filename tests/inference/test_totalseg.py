"""TotalSegmentator tasks as spec models: resolved at load as the installed package resolves them, with
stand-in weights in the package's folder layout (no nnU-Net run here; tests/inference/test_totalseg_parity.py
runs them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
from totalsegmentator.map_to_binary import class_map, class_map_5_parts

from inference.errors import SpecError
from inference.spec import load_model_spec
from inference.totalseg_tasks import known_tasks, resolve_task
from tests.support.fake_model import write_spec
from tests.support.totalseg_weights import write_dataset, write_task


def spec(root: Path, **model: Any) -> Path:
    return write_spec(root / "spec.yaml", {"model_folder": "models", "models": [{"id": "x", **model}]})


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in weights: total (5 parts), total fast, liver_segments, the 6 mm crop model."""
    root = tmp_path_factory.mktemp("weights")
    write_task(root, "total", crop_datasets=(298,), patch_size=(16, 16, 16))
    write_task(root, "total", mode="fast", patch_size=(16, 16, 16))
    write_task(root, "liver_segments", patch_size=(16, 16, 16))
    return root


def test_total_runs_its_five_datasets_merged_into_the_package_class_map(
    tmp_path: Path, weights: Path
) -> None:
    catalog = load_model_spec(
        spec(tmp_path, totalseg_task="total"), environ={"TOTALSEG_WEIGHTS_PATH": str(weights)}
    )
    model = catalog.resolve("x")
    task = model.totalseg
    assert task is not None
    assert [p.dataset_id for p in task.main.parts] == [291, 292, 293, 294, 295]
    assert model.labels == dict(class_map["total"]) and len(model.segments) == 117
    for part, part_map in zip(task.main.parts, class_map_5_parts.values(), strict=False):
        assert {class_map["total"][v] for v in part.to_task.values()} == set(part_map.values())
        assert all(class_map["total"][part.to_task[k]] == name for k, name in part_map.items())
    assert task.main.resample == (1.5, 1.5, 1.5) and task.crop is None
    stage = model.default_args.for_stage(0)
    assert (stage.tile_step_size, stage.tta, stage.use_folds) == (0.8, False, (0,))
    assert model.segments[5].label == "liver" and model.segments[5].coding.property_type.value == "10200004"


def test_fast_is_the_3mm_single_dataset(tmp_path: Path, weights: Path) -> None:
    env = {"TOTALSEG_WEIGHTS_PATH": str(weights)}
    by_name = load_model_spec(spec(tmp_path, totalseg_task="total_fast"), environ=env).resolve("x")
    by_option = load_model_spec(
        spec(tmp_path, totalseg_task="total", totalseg_options={"fast": True}), environ=env
    ).resolve("x")
    for model in (by_name, by_option):
        assert model.totalseg is not None
        assert [p.dataset_id for p in model.totalseg.main.parts] == [297]
        assert model.totalseg.main.resample == (3.0, 3.0, 3.0)
    assert by_name.fingerprint == by_option.fingerprint


def test_organ_task_crops_with_the_6mm_total_model_and_a_20mm_margin(tmp_path: Path, weights: Path) -> None:
    model = load_model_spec(
        spec(tmp_path, totalseg_task="liver_segments"), environ={"TOTALSEG_WEIGHTS_PATH": str(weights)}
    ).resolve("x")
    task = model.totalseg
    assert task is not None and task.crop is not None
    assert [p.dataset_id for p in task.crop.run.parts] == [298]
    assert task.crop.run.resample == (6.0, 6.0, 6.0)
    assert [class_map["total"][v] for v in task.crop.rois or ()] == ["liver"]
    assert task.crop.addon_mm == (20.0, 20.0, 20.0)
    assert task.main.resample == (0.8046879768371582, 0.8046879768371582, 1.5)
    assert model.default_args.for_stage(0).tile_step_size == 0.5


def test_roi_subset_runs_only_the_parts_holding_its_classes(tmp_path: Path, weights: Path) -> None:
    model = load_model_spec(
        spec(tmp_path, totalseg_task="total", totalseg_options={"roi_subset": ["liver", "vertebrae_L1"]}),
        environ={"TOTALSEG_WEIGHTS_PATH": str(weights)},
    ).resolve("x")
    task = model.totalseg
    assert task is not None and task.crop is not None
    assert [p.dataset_id for p in task.main.parts] == [291, 292]
    assert sorted(model.labels.values()) == ["liver", "vertebrae_L1"]
    assert sorted(class_map["total"][v] for v in task.crop.rois or ()) == ["liver", "vertebrae_L1"]


def test_weights_are_looked_up_like_totalsegmentator(tmp_path: Path, weights: Path) -> None:
    local = tmp_path / "models" / "totalseg"
    write_task(local, "total", mode="fast", patch_size=(16, 16, 16))
    path = spec(tmp_path, totalseg_task="total_fast")
    env_wins = load_model_spec(path, environ={"TOTALSEG_WEIGHTS_PATH": str(weights)}).resolve("x")
    assert env_wins.model_dir.is_relative_to(weights)
    local_next = load_model_spec(path, environ={"TOTALSEG_HOME_DIR": str(tmp_path / "home")}).resolve("x")
    assert local_next.model_dir.is_relative_to(local)
    home = tmp_path / "home2"
    write_task(home / "nnunet" / "results", "total", mode="fast", patch_size=(16, 16, 16))
    other = spec(tmp_path / "other", totalseg_task="total_fast")
    from_home = load_model_spec(other, environ={"TOTALSEG_HOME_DIR": str(home)}).resolve("x")
    assert from_home.model_dir.is_relative_to(home / "nnunet" / "results")


def test_a_missing_part_is_a_load_error_naming_task_dataset_and_folder(tmp_path: Path, weights: Path) -> None:
    root = tmp_path / "partial"
    write_task(root, "total", patch_size=(16, 16, 16))
    ribs = TASK_ID_WEIGHTS_CONFIGS[295]["foldername"]
    import shutil

    shutil.rmtree(root / ribs)
    with pytest.raises(SpecError) as info:
        load_model_spec(spec(tmp_path, totalseg_task="total"), environ={"TOTALSEG_WEIGHTS_PATH": str(root)})
    message = str(info.value)
    assert "model 'x'" in message and "'total'" in message and ribs in message and str(root) in message


def test_a_missing_crop_model_is_a_load_error(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_task(root, "liver_segments", patch_size=(16, 16, 16))
    with pytest.raises(SpecError, match=r"'liver_segments'.*Dataset298_TotalSegmentator_total_6mm_1559subj"):
        load_model_spec(
            spec(tmp_path, totalseg_task="liver_segments"), environ={"TOTALSEG_WEIGHTS_PATH": str(root)}
        )


def test_licensed_task_without_weights_says_it_needs_a_licence(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"Dataset481_tissue_1559subj.*licen"):
        load_model_spec(
            spec(tmp_path, totalseg_task="tissue_types"), environ={"TOTALSEG_WEIGHTS_PATH": str(tmp_path)}
        )


def test_licensed_task_with_weights_loads_and_is_marked(tmp_path: Path) -> None:
    write_dataset(tmp_path / "w", 481, "nnUNetTrainer", dict(class_map["tissue_types"]), [1.5] * 3)
    model = load_model_spec(
        spec(tmp_path, totalseg_task="tissue_types"), environ={"TOTALSEG_WEIGHTS_PATH": str(tmp_path / "w")}
    ).resolve("x")
    assert model.totalseg is not None and model.totalseg.licence_required


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("total", {"fast": True, "fastest": True}, "exclude each other"),
        ("total_fast", {"fastest": True}, "fast mode"),
        ("liver_segments", {"fast": True}, "does not work with --fast"),
        ("vertebrae_mr", {"fast": True}, "no fast modes"),
        ("body", {"fastest": True}, "no 'fastest' mode"),
        ("liver_segments", {"roi_subset": ["liver"]}, "only works with the total tasks"),
        ("total", {"roi_subset": ["liver", "kidney_middle"]}, "kidney_middle not in task 'total'"),
        ("total_mr", {"body_seg": True}, "not supported for MR"),
        ("total", {"tta": True}, "tta"),
        ("total", {"roi_subset": []}, "roi_subset"),
    ],
)
def test_options_are_checked_at_load(
    tmp_path: Path, weights: Path, task: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        load_model_spec(
            spec(tmp_path, totalseg_task=task, totalseg_options=options),
            environ={"TOTALSEG_WEIGHTS_PATH": str(weights)},
        )


def test_options_without_a_task_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="totalseg_options needs totalseg_task"):
        load_model_spec(spec(tmp_path, rel_path="m", totalseg_options={"fast": True}), environ={})


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("teeth", "crop_model"),
        ("heartchambers_highres", "remove_outside"),
        ("vertebrae_pp", "post-processing"),
    ],
)
def test_tasks_needing_unbuilt_steps_are_refused_at_load(tmp_path: Path, task: str, message: str) -> None:
    with pytest.raises(SpecError, match=rf"model 'x'.*{message}"):
        load_model_spec(spec(tmp_path, totalseg_task=task), environ={"TOTALSEG_WEIGHTS_PATH": str(tmp_path)})


def test_unknown_task_suggests_close_names(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"model 'x'.*unknown TotalSegmentator task 'liver_segmnts'.*liver_segments"
    ):
        load_model_spec(spec(tmp_path, totalseg_task="liver_segmnts"), environ={})


def test_dataset_labels_must_match_the_class_map(tmp_path: Path) -> None:
    labels = dict(class_map["liver_segments"])
    labels[3] = "segment_three"
    write_dataset(tmp_path / "w", 570, "nnUNetTrainerNoMirroring", labels, [0.8, 0.8, 1.5])
    with pytest.raises(SpecError, match=r"label 3 is 'segment_three'.*'liver_segment_3'"):
        resolve_task("liver_segments", tmp_path / "w")


def test_known_tasks_include_multi_part_and_fast_modes() -> None:
    tasks = set(known_tasks())
    assert {"total", "total_mr", "total_fast", "total_fastest", "liver_segments", "body_fast"} <= tasks
    assert "body_fastest" not in tasks


def test_probability_outputs_are_refused_before_any_pixel_is_read(tmp_path: Path, weights: Path) -> None:
    from inference.errors import PredictionError
    from inference.executor import InferenceRequest, InProcessExecutor

    catalog = load_model_spec(
        spec(tmp_path, totalseg_task="total_fast"), environ={"TOTALSEG_WEIGHTS_PATH": str(weights)}
    )
    executor = InProcessExecutor(catalog, device="cpu")
    request = InferenceRequest(
        inputs=[[tmp_path / "missing.dcm"]], models=["x"], args={"proba_threshold": 0.5}, output_dir=tmp_path
    )
    with pytest.raises(PredictionError, match="label map, not probabilities"):
        executor.run(request)
