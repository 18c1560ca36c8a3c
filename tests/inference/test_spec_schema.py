"""The spec's pydantic models on their own: the field rules test_spec does not reach (segment colours
and labels, model ids and aliases, content labels) and that unknown keys are refused everywhere. A
refusal is checked by the field it names (pydantic's wording is pydantic's); our own messages in full."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from inference.spec_schema import CodeInput, MetadataInput, ModelInput, SegmentEntry, SpecHeader


def problem(model: type, **fields: Any) -> str:
    """The one validation error, as "field: message"."""
    with pytest.raises(ValidationError) as info:
        model(**fields)
    [error] = info.value.errors()
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def test_segment_entry_accepts_the_documented_forms() -> None:
    entry = SegmentEntry.model_validate(
        {"name": "Liver", "label": 3, "color": [0, 128, 255], "code": {"value": "10200004"}}
    )
    assert entry.label == 3 and entry.color == (0, 128, 255)
    assert entry.code == CodeInput(value="10200004", scheme="SCT", meaning=None)
    assert SegmentEntry(name="Liver", label="Hepar").label == "Hepar"
    assert SegmentEntry(name="x" * 64).name == "x" * 64


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"color": (0, 256, 0)}, "color must be three values 0-255, got [0, 256, 0]"),
        ({"color": (-1, 0, 0)}, "color must be three values 0-255"),
        ({"label": 0}, "an integer label is a label value, 1-65535, got 0"),
        ({"label": 65536}, "an integer label is a label value, 1-65535, got 65536"),
        ({"label": ""}, "label text must have 1-64 characters"),
        ({"label": "x" * 65}, "label text must have 1-64 characters"),
        ({"number": 0}, "number: "),
        ({"name": "x" * 65}, "name: "),
        (
            {"colour": (1, 2, 3)},
            "colour: ",
        ),  # a misspelt key is an error, not ignored
    ],
)
def test_segment_entry_refusals(fields: dict[str, Any], expected: str) -> None:
    assert expected in problem(SegmentEntry, **{"name": "Liver", **fields})


@pytest.mark.parametrize("model_id", ["liver", "Liver-2", "a", "totalseg_total.v2+fast", "x" * 64])
def test_model_ids(model_id: str) -> None:
    assert ModelInput(id=model_id, rel_path="D").id == model_id


@pytest.mark.parametrize("model_id", ["", "-liver", ".hidden", "with space", "a/b", "x" * 65, "lébér"])
def test_bad_model_ids(model_id: str) -> None:
    assert problem(ModelInput, id=model_id, rel_path="D").startswith("id: ")


def test_aliases_must_not_be_blank() -> None:
    assert ModelInput(id="liver", rel_path="D", aliases=["hepar", "leber"]).aliases == ["hepar", "leber"]
    assert "aliases must not be empty strings" in problem(
        ModelInput, id="liver", rel_path="D", aliases=["ok", "  "]
    )


def test_metadata_fields() -> None:
    assert MetadataInput(content_label="LIVER_SEG 1").content_label == "LIVER_SEG 1"
    assert problem(MetadataInput, content_label="liver").startswith("content_label: ")  # CS: upper case only
    assert problem(MetadataInput, content_label="A" * 17).startswith("content_label: ")
    assert problem(MetadataInput, segment_names=[]).startswith("segment_names: ")
    assert problem(MetadataInput, algorithm_type="MANUAL").startswith("algorithm_type: ")
    assert problem(MetadataInput, series_number=-1).startswith("series_number: ")


def test_header_needs_a_folder_and_models() -> None:
    header = SpecHeader(model_folder="models", models=[{"anything": 1}])
    assert header.models == [{"anything": 1}] and header.aliases == {}
    assert problem(SpecHeader, model_folder="models", models=[]).startswith("models: ")
    assert problem(SpecHeader, model_folder="", models=[{}]).startswith("model_folder: ")
    assert problem(SpecHeader, model_folder="m", models=[{}], extra=1).startswith("extra: ")
