"""TotalSegmentator tasks as spec models, with locally made (random-weight) weights folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from totalsegmentator.map_to_binary import class_map

from inference.errors import SpecError
from inference.spec import load_model_spec
from inference.totalseg import known_tasks, resolve_task
from tests.support.fake_model import make_model_folder, write_spec

TOTAL_FASTEST = "Dataset298_TotalSegmentator_total_6mm_1559subj"
TOTAL_TRAINER = "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"
LIVER_SEGMENTS = "Dataset570_ct_liver_segments"


def weights(root: Path, dataset: str, leaf: str, task: str, *, rename: dict[str, str] | None = None) -> Path:
    labels = {"background": 0}
    for value, name in class_map[task].items():
        labels[(rename or {}).get(name, name)] = value
    return make_model_folder(root / dataset / leaf, labels=labels, size=1000)


def spec(root: Path, *models: dict[str, object]) -> Path:
    return write_spec(root / "spec.yaml", {"model_folder": "models", "models": list(models)})


def test_total_fastest_from_model_folder_totalseg(tmp_path: Path) -> None:
    weights(tmp_path / "models" / "totalseg", TOTAL_FASTEST, TOTAL_TRAINER, "total")
    catalog = load_model_spec(
        spec(tmp_path, {"id": "total_ct", "totalseg_task": "total_fastest"}), environ={}
    )
    m = catalog.resolve("total_ct")
    assert m.totalseg is not None and m.totalseg.dataset_id == 298
    assert m.model_dir.name == TOTAL_TRAINER
    assert len(m.labels) == len(class_map["total"]) == len(m.segments)
    assert m.labels[5] == class_map["total"][5] == "liver"
    assert m.segments[5].coding.property_type.value == "10200004"
    assert all(s.coding.property_type.scheme_designator == "SCT" for s in m.segments.values())
    assert m.algorithm.name == "TotalSegmentator"
    assert m.version.startswith("total_fastest+")


def test_weights_path_env_wins(tmp_path: Path) -> None:
    weights(
        tmp_path / "elsewhere",
        LIVER_SEGMENTS,
        "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres",
        "liver_segments",
    )
    env = {"TOTALSEG_WEIGHTS_PATH": str(tmp_path / "elsewhere")}
    catalog = load_model_spec(spec(tmp_path, {"id": "segs", "totalseg_task": "liver_segments"}), environ=env)
    m = catalog.resolve("segs")
    assert m.labels == {i: f"liver_segment_{i}" for i in range(1, 9)}
    assert m.segments[4].coding.property_type.meaning == "Couinaud hepatic segment IV"
    assert m.default_args.for_stage(0).use_folds == (0,)


def test_multi_part_tasks_are_refused(tmp_path: Path) -> None:
    for task in ("total", "total_mr", "headneck_muscles"):
        with pytest.raises(SpecError, match=r"model 'x'.*runs several models"):
            load_model_spec(spec(tmp_path, {"id": "x", "totalseg_task": task}), environ={})
    with pytest.raises(SpecError, match="use total_fastest or total_fast"):
        resolve_task("total", tmp_path)


def test_unknown_task_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"model 'x'.*unknown TotalSegmentator task 'liver_segmnts'.*liver_segments"
    ):
        load_model_spec(spec(tmp_path, {"id": "x", "totalseg_task": "liver_segmnts"}), environ={})
    with pytest.raises(SpecError, match=r"model 'x'.*no weights folder .*Dataset570_\*"):
        load_model_spec(spec(tmp_path, {"id": "x", "totalseg_task": "liver_segments"}), environ={})


def test_dataset_labels_must_match_the_class_map(tmp_path: Path) -> None:
    weights(
        tmp_path / "models" / "totalseg",
        LIVER_SEGMENTS,
        "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres",
        "liver_segments",
        rename={"liver_segment_3": "segment_three"},
    )
    with pytest.raises(SpecError, match=r"model 'x'.*label 3 'liver_segment_3'.*'segment_three'"):
        load_model_spec(spec(tmp_path, {"id": "x", "totalseg_task": "liver_segments"}), environ={})


def test_known_tasks_include_fast_modes_not_multi_part() -> None:
    tasks = known_tasks()
    assert {"total_fast", "total_fastest", "liver_segments", "body"} <= set(tasks)
    assert "total" not in tasks and "total_mr" not in tasks
