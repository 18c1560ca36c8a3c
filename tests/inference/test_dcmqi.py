"""dcmqi SEG metadata templates read on their own (test_spec covers them through a model spec): groups
flattened and sorted by label, code conversion, algorithm type and name, series fields, and every
refusal naming the file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydicom.sr.coding import Code

from inference.dcmqi import read_dcmqi_template, to_sct
from inference.errors import SpecError
from inference.segments import ANATOMICAL_STRUCTURE


def code(value: str, scheme: str, meaning: str) -> dict[str, str]:
    return {"CodeValue": value, "CodingSchemeDesignator": scheme, "CodeMeaning": meaning}


def segment(label_id: int, meaning: str, value: str, **extra: Any) -> dict[str, Any]:
    return {
        "labelID": label_id,
        "SegmentedPropertyCategoryCodeSequence": code("T-D000A", "SRT", "Anatomical Structure"),
        "SegmentedPropertyTypeCodeSequence": code(value, "SCT", meaning),
        **extra,
    }


TEMPLATE: dict[str, Any] = {
    "ContentCreatorName": "Reader1",
    "ClinicalTrialSeriesID": "Session1",
    "ClinicalTrialTimePointID": "1",
    "ClinicalTrialCoordinatingCenterName": "dcmqi",
    "SeriesDescription": "Segmentation",
    "SeriesNumber": "300",
    "InstanceNumber": "1",  # not ours to use: ignored
    "BodyPartExamined": "ABDOMEN",
    "ContentLabel": "ORGANS",
    "ContentDescription": "Organs by a model",
    "segmentAttributes": [
        [
            segment(
                3,
                "Kidney",
                "64033007",
                SegmentLabel="Left kidney",
                SegmentDescription="left only",
                SegmentAlgorithmName="OrganNet",
                SegmentedPropertyTypeModifierCodeSequence=code("7771000", "SCT", "Left"),
                AnatomicRegionSequence=code("T-71000", "SRT", "Kidney"),
                AnatomicRegionModifierSequence=code("7771000", "SCT", "Left"),
                recommendedDisplayRGBValue=[185, 102, 83],
                TrackingIdentifier="kidney-left",
                TrackingUniqueIdentifier="2.25.1234",
            )
        ],
        [segment(1, "Liver", "10200004", SegmentAlgorithmName="OrganNet"), segment(2, "Spleen", "78961009")],
    ],
}


def write(tmp_path: Path, data: Any, name: str = "meta.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def changed(**fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(TEMPLATE)
    data.update(fields)
    return data


def test_reads_segments_codes_and_series_fields(tmp_path: Path) -> None:
    t = read_dcmqi_template(write(tmp_path, TEMPLATE))
    assert list(t.segments) == [1, 2, 3]  # groups flattened, sorted by label value
    liver, spleen, kidney = t.segments[1], t.segments[2], t.segments[3]
    assert (liver.label_value, liver.label, liver.description, liver.color) == (1, "Liver", None, None)
    assert spleen.coding.property_type == Code("78961009", "SCT", "Spleen")
    assert liver.coding.category == ANATOMICAL_STRUCTURE  # SRT T-D000A -> SCT body structure -> CID 7150
    assert (kidney.label, kidney.description, kidney.color) == ("Left kidney", "left only", (185, 102, 83))
    assert (kidney.tracking_id, kidney.tracking_uid) == ("kidney-left", "2.25.1234")
    assert kidney.coding.property_type_modifier == Code("7771000", "SCT", "Left")
    assert kidney.coding.anatomic_region == Code("64033007", "SCT", "Kidney")  # converted from SRT
    assert kidney.coding.anatomic_region_modifier == Code("7771000", "SCT", "Left")
    assert (t.algorithm_name, t.algorithm_type) == ("OrganNet", "AUTOMATIC")
    o = t.output
    assert (o.series_description, o.series_number, o.body_part_examined) == ("Segmentation", 300, "ABDOMEN")
    assert (o.content_label, o.content_description, o.content_creator_name) == (
        "ORGANS",
        "Organs by a model",
        "Reader1",
    )
    assert (o.clinical_trial_series_id, o.clinical_trial_time_point_id) == ("Session1", "1")
    assert o.clinical_trial_coordinating_center_name == "dcmqi"
    assert o.clinical_trial_series_description is None and o.manufacturer is None


def test_minimal_template_has_no_series_fields(tmp_path: Path) -> None:
    t = read_dcmqi_template(write(tmp_path, {"segmentAttributes": [[segment(1, "Liver", "10200004")]]}))
    assert t.segments[1].label == "Liver"  # no SegmentLabel: the type's meaning
    assert t.output.series_description is None and t.output.series_number is None


def test_sct_conversion() -> None:
    assert to_sct(Code("T-62000", "SRT", "Liver")) == Code("10200004", "SCT", "Liver")
    unknown = Code("X-00000", "SRT", "Something")
    assert to_sct(unknown) is unknown
    other = Code("T-62000", "99LOCAL", "Liver")
    assert to_sct(other) is other


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "must hold a JSON object, got list"),
        ({"segmentAttributes": []}, "is invalid: segmentAttributes: "),
        ({"segmentAttributes": [[]]}, "describes no segments"),
        (
            changed(segmentAttributes=[[segment(1, "Liver", "1")], [segment(1, "Spleen", "2")]]),
            "labelID 1 twice",
        ),
        (
            changed(segmentAttributes=[[segment(1, "Liver", "1", SegmentAlgorithmType="MANUAL")]]),
            "SegmentAlgorithmType MANUAL",
        ),
        (
            changed(
                segmentAttributes=[
                    [
                        segment(1, "Liver", "1", SegmentAlgorithmName="A"),
                        segment(2, "Spleen", "2", SegmentAlgorithmName="B"),
                    ]
                ]
            ),
            "several algorithms: A, B",
        ),
        (
            changed(segmentAttributes=[[segment(1, "Liver", "1", recommendedDisplayRGBValue=[0, 300, 0])]]),
            "0-255",
        ),
        (changed(segmentAttributes=[[segment(0, "Liver", "1")]]), "segmentAttributes[0][0].labelID: "),
        (changed(SeriesNumber=-1), "is invalid: SeriesNumber: "),
        (
            changed(
                segmentAttributes=[
                    [{"labelID": 1, "SegmentedPropertyTypeCodeSequence": code("1", "SCT", "X")}]
                ]
            ),
            "segmentAttributes[0][0].SegmentedPropertyCategoryCodeSequence: ",
        ),
        (
            changed(segmentAttributes=[[segment(1, "", "10200004")]]),
            "SegmentedPropertyTypeCodeSequence.CodeMeaning",
        ),
    ],
)
def test_refusals_name_the_file_and_the_problem(tmp_path: Path, data: Any, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        read_dcmqi_template(path)
    assert str(info.value).startswith(f"dcmqi template {path}")
    assert message in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"absent\.json cannot be read"):
        read_dcmqi_template(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text('{"segmentAttributes": [', encoding="utf-8")
    with pytest.raises(SpecError, match=r"broken\.json is not valid JSON"):
        read_dcmqi_template(tmp_path / "broken.json")
    (tmp_path / "latin1.json").write_bytes('{"SeriesDescription": "Lésion"}'.encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1\.json is not valid JSON"):
        read_dcmqi_template(tmp_path / "latin1.json")
