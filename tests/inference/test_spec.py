"""model-serve-spec.yaml loading: resolution rules, every start-up error (naming the model), versions."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from inference.errors import ArgsError, SpecError, UnknownModelError
from inference.spec import ModelCatalog, load_model_spec
from tests.support.fake_model import make_model_folder, write_spec

LIVER_DIR = "Dataset001_Liver/nnUNetTrainer__nnUNetPlans__3d_fullres"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_model_folder(tmp_path / "models" / LIVER_DIR)
    return tmp_path


def model(**extra: Any) -> dict[str, Any]:
    return {"id": "liver", "rel_path": LIVER_DIR, **extra}


def load(root: Path, *models: dict[str, Any], env: dict[str, str] | None = None, **top: Any) -> ModelCatalog:
    spec = {"model_folder": "models", **top, "models": list(models)}
    return load_model_spec(write_spec(root / "spec.yaml", spec), environ=env or {})


def spec_error(root: Path, *models: dict[str, Any], **top: Any) -> str:
    with pytest.raises(SpecError) as info:
        load(root, *models, **top)
    return str(info.value)


def test_loads_a_model_with_labels_codes_and_defaults(root: Path) -> None:
    catalog = load(root, model(name="Liver model", aliases=["hepar"]))
    assert catalog.ids() == ["liver"]
    m = catalog.resolve("liver")
    assert m.model_dir == (root / "models" / LIVER_DIR).resolve()
    assert m.labels == {1: "liver", 2: "spleen"}
    assert m.channel_names == {0: "CT"}
    assert m.file_ending == ".nii.gz"
    assert m.folds == {0: ("checkpoint_final.pth",)}
    assert m.min_mem == 4000
    assert m.default_args.for_stage(0).use_folds == (0,)
    assert (m.trainer, m.plans, m.configuration) == ("nnUNetTrainer", "nnUNetPlans", "3d_fullres")
    assert sorted(m.segments) == [1, 2]
    assert m.segments[1].coding.property_type.value == "10200004"  # SCT Liver
    assert m.segments[2].coding.property_type.value == "78961009"  # SCT Spleen
    assert m.segments[1].coding.category.value == "91723000"
    assert m.algorithm.name == "nnU-Net"
    assert m.algorithm.version == m.fingerprint[:12]
    assert m.version == m.fingerprint[:12]


def test_aliases_and_name_resolve_to_the_id(root: Path) -> None:
    catalog = load(root, model(name="Liver model", aliases=["hepar", "lv"]), aliases={"foie": "liver"})
    for key in ("liver", "Liver model", "hepar", "lv", "foie"):
        assert catalog.resolve(key).id == "liver"
    assert "hepar" in catalog
    assert "kidney" not in catalog


def test_unknown_model_lists_known_ids(root: Path) -> None:
    catalog = load(root, model())
    with pytest.raises(UnknownModelError, match=r"unknown model 'kidney'; known models: liver"):
        catalog.resolve("kidney")


def test_relative_model_folder_is_resolved_against_the_spec_folder(root: Path, tmp_path: Path) -> None:
    spec = write_spec(root / "conf" / "spec.yaml", {"model_folder": "../models", "models": [model()]})
    catalog = load_model_spec(spec, environ={})
    assert catalog.model_folder == (root / "models").resolve()
    assert catalog.resolve("liver").model_dir.is_dir()


def test_override_model_folder_env(root: Path) -> None:
    other = root / "elsewhere"
    make_model_folder(other / LIVER_DIR, labels=("background", "kidney"))
    catalog = load(root, model(), env={"OVERRIDE_MODEL_FOLDER": str(other)})
    assert catalog.model_folder == other.resolve()
    assert catalog.resolve("liver").labels == {1: "kidney"}


def test_rel_path_substring_matches_one_folder(root: Path) -> None:
    catalog = load(root, {"id": "liver", "rel_path": "Dataset001"})
    assert catalog.resolve("liver").model_dir.name == "nnUNetTrainer__nnUNetPlans__3d_fullres"


def test_ambiguous_rel_path_names_the_matches(root: Path) -> None:
    make_model_folder(root / "models" / "Dataset001_Liver" / "nnUNetTrainer__nnUNetPlans__2d")
    message = spec_error(root, {"id": "liver", "rel_path": "Dataset001"})
    assert "model 'liver'" in message and "ambiguous" in message
    assert "3d_fullres" in message and "__2d" in message


def test_missing_model_folder(root: Path) -> None:
    message = spec_error(root, {"id": "ghost", "rel_path": "Dataset999_Ghost"})
    assert "model 'ghost'" in message and "Dataset999_Ghost" in message


def test_no_fold_folders(root: Path) -> None:
    folder = root / "models" / "Empty" / "T__P__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    (folder / "plans.json").write_text("{}")
    message = spec_error(root, {"id": "empty", "rel_path": "Empty/T__P__3d_fullres"})
    assert "model 'empty'" in message and "no fold folders" in message


@pytest.mark.parametrize("missing", ["dataset.json", "plans.json"])
def test_missing_json_files(root: Path, missing: str) -> None:
    (root / "models" / LIVER_DIR / missing).unlink()
    message = spec_error(root, model())
    assert "model 'liver'" in message and f"missing {missing}" in message


def test_duplicate_ids(root: Path) -> None:
    message = spec_error(root, model(), model())
    assert "model 'liver'" in message and "id used twice" in message


def test_alias_clashing_with_another_id(root: Path) -> None:
    make_model_folder(root / "models" / "Dataset002_Spleen" / "T__P__3d_fullres")
    message = spec_error(root, model(), {"id": "spleen", "rel_path": "Dataset002", "aliases": ["liver"]})
    assert "model 'spleen'" in message and "alias 'liver' is the id of another model" in message


def test_alias_used_by_two_models(root: Path) -> None:
    make_model_folder(root / "models" / "Dataset002_Spleen" / "T__P__3d_fullres")
    message = spec_error(
        root, model(aliases=["organs"]), {"id": "spleen", "rel_path": "Dataset002", "aliases": ["organs"]}
    )
    assert "model 'spleen'" in message and "'organs' is already an alias of 'liver'" in message


def test_alias_pointing_nowhere(root: Path) -> None:
    message = spec_error(root, model(), aliases={"kidney": "kidney_model"})
    assert "alias 'kidney'" in message and "'kidney_model'" in message and "does not define" in message


def test_segment_count_must_match_dataset_labels(root: Path) -> None:
    message = spec_error(root, model(metadata={"algorithm_name": "X", "segment_names": ["Liver"]}))
    assert "model 'liver'" in message
    assert "1 entries but dataset.json has 2 labels (1: liver, 2: spleen)" in message


def test_named_segment_must_match_the_dataset_label(root: Path) -> None:
    names = [{"name": "Liver", "dataset_label": "liver"}, {"name": "Kidney", "dataset_label": "kidney"}]
    message = spec_error(root, model(metadata={"segment_names": names}))
    assert "model 'liver'" in message and "dataset_label 'kidney'" in message and "'spleen'" in message


def test_segment_label_value_outside_the_dataset(root: Path) -> None:
    names = ["Liver", {"name": "Spleen", "number": 7}]
    message = spec_error(root, model(metadata={"segment_names": names}))
    assert "model 'liver'" in message and "label value 7" in message


def test_unknown_segment_name_without_code(root: Path) -> None:
    message = spec_error(root, model(metadata={"segment_names": ["Liver", "Blorp gland"]}))
    assert "model 'liver'" in message and "'Blorp gland'" in message and "code" in message


def test_unknown_dataset_label_name_without_metadata(root: Path) -> None:
    make_model_folder(root / "models" / "Dataset003_X" / "T__P__3d_fullres", labels=("background", "blorp"))
    message = spec_error(root, {"id": "x", "rel_path": "Dataset003_X"})
    assert "model 'x'" in message and "'blorp'" in message


def test_inline_segments_with_codes_modifiers_and_positions(root: Path) -> None:
    names = [
        {"name": "Spleen", "number": 2, "tracking_id": "spleen-1"},
        {"name": "Cyst", "label": "Left KidneyCyst", "code": "367643001", "modifier": "left", "number": 1},
    ]
    metadata = {
        "algorithm_name": "OrganNet",
        "algorithm_version": "2.1",
        "segment_names": names,
        "series_description": "Organ segmentation",
        "series_number": 901,
        "manufacturer": "Hospital AI Lab",
        "body_part_examined": "ABDOMEN",
    }
    m = load(root, model(metadata=metadata)).resolve("liver")
    cyst, spleen = m.segments[1], m.segments[2]
    assert cyst.label == "Left KidneyCyst"
    assert cyst.coding.property_type.value == "367643001" and cyst.coding.property_type.meaning == "Cyst"
    assert cyst.coding.property_type_modifier is not None
    assert cyst.coding.property_type_modifier.meaning == "Left"
    assert cyst.coding.category.value == "49755003"  # Morphologically Abnormal Structure
    assert spleen.tracking_id == "spleen-1" and spleen.tracking_uid is not None
    assert spleen.tracking_uid.startswith("2.25.")
    assert (m.algorithm.name, m.algorithm.version) == ("OrganNet", "2.1")
    assert m.version == f"2.1+{m.fingerprint[:12]}"
    assert m.output.series_description == "Organ segmentation" and m.output.series_number == 901
    assert m.output.manufacturer == "Hospital AI Lab" and m.output.body_part_examined == "ABDOMEN"


def test_code_values_get_their_snomed_meaning(root: Path) -> None:
    names = [{"name": "Liver", "code": "10200004"}, {"name": "Milt", "label": "Spleen", "code": "78961009"}]
    m = load(root, model(metadata={"segment_names": names})).resolve("liver")
    assert m.segments[1].coding.property_type.meaning == "Liver"
    assert m.segments[2].coding.property_type.meaning == "Spleen"  # not "Splenic structure"
    assert m.segments[2].label == "Spleen"


DCMQI = {
    "SeriesDescription": "Liver and spleen",
    "SeriesNumber": "300",
    "ContentCreatorName": "Reader^One",
    "ClinicalTrialSeriesID": "S1",
    "BodyPartExamined": "ABDOMEN",
    "segmentAttributes": [
        [
            {
                "labelID": 1,
                "SegmentLabel": "Liver",
                "SegmentDescription": "whole liver",
                "SegmentAlgorithmType": "AUTOMATIC",
                "SegmentAlgorithmName": "LiverNet",
                "SegmentedPropertyCategoryCodeSequence": {
                    "CodeValue": "T-D000A",
                    "CodingSchemeDesignator": "SRT",
                    "CodeMeaning": "Anatomical Structure",
                },
                "SegmentedPropertyTypeCodeSequence": {
                    "CodeValue": "10200004",
                    "CodingSchemeDesignator": "SCT",
                    "CodeMeaning": "Liver",
                },
                "recommendedDisplayRGBValue": [221, 130, 101],
            },
            {
                "labelID": 2,
                "SegmentLabel": "Spleen",
                "SegmentAlgorithmType": "AUTOMATIC",
                "SegmentAlgorithmName": "LiverNet",
                "SegmentedPropertyCategoryCodeSequence": {
                    "CodeValue": "91723000",
                    "CodingSchemeDesignator": "SCT",
                    "CodeMeaning": "Anatomical Structure",
                },
                "SegmentedPropertyTypeCodeSequence": {
                    "CodeValue": "78961009",
                    "CodingSchemeDesignator": "SCT",
                    "CodeMeaning": "Spleen",
                },
            },
        ]
    ],
}


def test_dcmqi_template(root: Path) -> None:
    (root / "meta.json").write_text(json.dumps(DCMQI))
    m = load(root, model(metadata={"path": "meta.json"})).resolve("liver")
    assert m.segments[1].label == "Liver" and m.segments[1].description == "whole liver"
    assert m.segments[1].color == (221, 130, 101)
    assert m.segments[1].coding.category.scheme_designator == "SCT"  # SRT T-D000A converted
    assert m.segments[1].coding.category.value == "91723000"
    assert m.segments[2].coding.property_type.meaning == "Spleen"
    assert m.algorithm.name == "LiverNet"
    assert m.output.series_description == "Liver and spleen" and m.output.series_number == 300
    assert m.output.content_creator_name == "Reader^One" and m.output.clinical_trial_series_id == "S1"


def test_inline_fields_override_the_template(root: Path) -> None:
    (root / "meta.json").write_text(json.dumps(DCMQI))
    meta = {"path": "meta.json", "series_description": "Override", "algorithm_name": "Other"}
    m = load(root, model(metadata=meta)).resolve("liver")
    assert m.output.series_description == "Override" and m.output.series_number == 300
    assert m.algorithm.name == "Other"


def test_unreadable_dcmqi_template(root: Path) -> None:
    (root / "meta.json").write_text("{not json")
    message = spec_error(root, model(metadata={"path": "meta.json"}))
    assert "model 'liver'" in message and "meta.json is not valid JSON" in message
    message = spec_error(root, model(metadata={"path": "absent.json"}))
    assert "model 'liver'" in message and "absent.json cannot be read" in message


def test_invalid_dcmqi_template(root: Path) -> None:
    broken = json.loads(json.dumps(DCMQI))
    del broken["segmentAttributes"][0][1]["SegmentedPropertyTypeCodeSequence"]
    (root / "meta.json").write_text(json.dumps(broken))
    message = spec_error(root, model(metadata={"path": "meta.json"}))
    assert "model 'liver'" in message and "SegmentedPropertyTypeCodeSequence" in message


def test_dcmqi_template_labels_must_match(root: Path) -> None:
    short = json.loads(json.dumps(DCMQI))
    short["segmentAttributes"][0].pop()
    (root / "meta.json").write_text(json.dumps(short))
    message = spec_error(root, model(metadata={"path": "meta.json"}))
    assert "model 'liver'" in message and "label values [1]" in message and "[1, 2]" in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"use_folds": [0, 1]}, "fold 1 not found"),
        ({"checkpoint_name": "checkpoint_best.pth"}, "fold_0 has no checkpoint_best.pth"),
        ({"tile_step_size": 1.5}, "tile_step_size must be in (0, 1]"),
        ({"folds": [0]}, "unknown parameter(s) folds"),
        ({"use_folds": [[0], [0]]}, "per-stage lists (use_folds)"),
    ],
)
def test_invalid_default_args(root: Path, args: dict[str, Any], expected: str) -> None:
    message = spec_error(root, model(default_args=args))
    assert "model 'liver'" in message and "default_args" in message and expected in message


def test_default_args_and_nnunet_serve_keys(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_model_folder(
        root / "models" / "Dataset004_Folds" / "T__P__3d_fullres",
        folds=(0, 1, "all"),
        checkpoints=("checkpoint_final.pth", "checkpoint_best.pth"),
    )
    entry = {
        "id": "folds",
        "rel_path": "Dataset004",
        "is_totalseg": False,
        "min_mem": 6000,
        "default_args": {"series_folders": ["inputs/ct"], "use_folds": "all", "tta": True},
    }
    with caplog.at_level(logging.WARNING):
        m = load(root, entry, load_timeout_min=60).resolve("folds")
    assert m.min_mem == 6000
    assert m.default_args.tta is True
    assert m.select_folds("all", "checkpoint_best.pth") == (0, 1)
    assert m.select_folds((1,), "checkpoint_final.pth") == (1,)
    with pytest.raises(ArgsError, match="fold 3 not found"):
        m.select_folds((3,), "checkpoint_final.pth")
    ignored = " ".join(r.getMessage() for r in caplog.records)
    assert "is_totalseg" in ignored and "load_timeout_min" in ignored
    # series_folders is honoured: a folder name stands for the next request series
    assert m.default_args.stage_inputs() == [[0]]


def test_default_series_folders_are_checked(root: Path) -> None:
    message = spec_error(root, model(default_args={"series_folders": ["ct", "late"]}))
    assert "series_folders: one list of 1 input(s)" in message
    message = spec_error(root, model(default_args={"series_folders": ["from:spleen=1"]}))
    assert "'from:spleen=1' names no model of the spec" in message


def test_unknown_keys_are_errors(root: Path) -> None:
    message = spec_error(root, model(colour="red"))
    assert "model 'liver'" in message and "colour" in message
    message = spec_error(root, model(metadata={"segment_names": ["Liver", "Spleen"], "algoritm": "x"}))
    assert "model 'liver'" in message and "algoritm" in message
    message = spec_error(root, model(), model_path="x")
    assert "model_path" in message


def test_duplicate_yaml_keys_are_errors(root: Path) -> None:
    text = f"model_folder: models\nmodels:\n  - id: liver\n    rel_path: {LIVER_DIR}\n    id: again\n"
    (root / "spec.yaml").write_text(text)
    with pytest.raises(SpecError, match="duplicate key 'id'"):
        load_model_spec(root / "spec.yaml", environ={})


def test_region_based_and_gapped_labels_are_refused(root: Path) -> None:
    make_model_folder(
        root / "models" / "R" / "T__P__3d_fullres", labels={"background": 0, "whole": [1, 2], "core": 2}
    )
    assert "region-based" in spec_error(root, {"id": "r", "rel_path": "R"})
    make_model_folder(root / "models" / "G" / "T__P__3d_fullres", labels={"background": 0, "liver": 2})
    assert "1..1 without gaps" in spec_error(root, {"id": "g", "rel_path": "G"})


def test_version_changes_with_retraining_not_with_copying(root: Path) -> None:
    first = load(root, model()).resolve("liver").version
    assert load(root, model()).resolve("liver").version == first
    copy = root / "copy"
    shutil.copytree(root / "models", copy / "models")  # new mtimes
    assert load(copy, model()).resolve("liver").version == first
    make_model_folder(root / "models" / LIVER_DIR, seed=1)  # "retrained": other weights
    assert load(root, model()).resolve("liver").version != first
