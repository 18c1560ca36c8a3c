"""Segment descriptions from ``metadata.segment_names`` entries, dataset.json labels and label checks,
called directly (test_spec goes through whole spec files): label values by position or given, each
way of writing a code, category, modifier and anatomic region, tracking UIDs, and every refusal
naming the model and the entry."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.sr.coding import Code

from inference.codes import CodeBook
from inference.errors import SpecError
from inference.segments import ANATOMICAL_STRUCTURE, SegmentCoding, SegmentSpec
from inference.spec_schema import CodeInput, SegmentEntry
from inference.spec_segments import (
    check_label_names,
    check_template_labels,
    segments_from_entries,
    segments_from_labels,
    with_tracking_uids,
)
from inference.uids import derive_uid

LABELS = {1: "liver", 2: "spleen"}
LIVER = Code("10200004", "SCT", "Liver")
SPLEEN = Code("78961009", "SCT", "Spleen")
KIDNEY = Code("64033007", "SCT", "Kidney")
TISSUE = Code("85756007", "SCT", "Tissue")
ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")


@pytest.fixture(scope="module")
def book() -> CodeBook:
    return CodeBook.default()


def liver_entry(book: CodeBook, **fields: Any) -> SegmentSpec:
    """The segment made from one entry describing label 1 (label 2 given as plain "spleen")."""
    segments = segments_from_entries("m", [SegmentEntry(name="Liver", **fields), "spleen"], LABELS, book)
    assert list(segments) == [1, 2]
    return segments[1]


def refusal(book: CodeBook, entries: list[Any], labels: dict[int, str] = LABELS) -> str:
    with pytest.raises(SpecError) as info:
        segments_from_entries("m", entries, labels, book)
    message = str(info.value)
    assert message.startswith("model 'm': ")
    return message


# ------------------------------------------------------------------ labels and positions


def test_segments_from_dataset_labels(book: CodeBook) -> None:
    segments = segments_from_labels("m", LABELS, book)
    assert [(s.label_value, s.label, s.coding.property_type) for s in segments.values()] == [
        (1, "liver", LIVER),
        (2, "spleen", SPLEEN),
    ]
    with pytest.raises(SpecError) as info:
        segments_from_labels("m", {1: "blorp", 2: "liver", 3: "zorp"}, book)
    # every label without a code in one message, not one per run
    assert str(info.value).startswith(
        "model 'm': no SNOMED CT code found for 2 dataset.json label(s): 'blorp' (value 1), 'zorp' (value 3)"
    )


def test_plain_names_take_their_position(book: CodeBook) -> None:
    segments = segments_from_entries("m", ["Liver", "Spleen"], LABELS, book)
    assert {v: (s.label, s.coding.property_type) for v, s in segments.items()} == {
        1: ("Liver", LIVER),
        2: ("Spleen", SPLEEN),
    }
    assert segments[1].coding.category == ANATOMICAL_STRUCTURE


def test_explicit_label_values_reorder(book: CodeBook) -> None:
    entries = [SegmentEntry(name="Spleen", number=2), SegmentEntry(name="Liver", label=1)]
    segments = segments_from_entries("m", entries, LABELS, book)
    assert list(segments) == [1, 2]  # sorted by value
    assert (segments[1].label, segments[2].label) == ("Liver", "Spleen")


def test_dataset_label_is_checked_loosely(book: CodeBook) -> None:
    assert liver_entry(book, dataset_label="Liver").label == "Liver"
    message = refusal(book, [SegmentEntry(name="Liver", dataset_label="kidney"), "spleen"])
    assert "segment_names[0] ('Liver') says dataset_label 'kidney'" in message
    assert "names label value 1 'liver'" in message


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["liver"], "segment_names has 1 entries but dataset.json has 2 labels (1: liver, 2: spleen)"),
        (["", "spleen"], "segment_names[0]: name: "),
        (
            [SegmentEntry(name="Liver", number=2, label=1), "spleen"],
            "gives two label values: number 2, label 1",
        ),
        ([SegmentEntry(name="Liver", number=3), "spleen"], "has label value 3, which dataset.json lacks"),
        (["liver", SegmentEntry(name="Spleen", number=1)], "describes label value 1, already described"),
    ],
)
def test_label_value_refusals(book: CodeBook, entries: list[Any], expected: str) -> None:
    assert expected in refusal(book, entries)


# ------------------------------------------------------------------ property type


def test_code_forms(book: CodeBook) -> None:
    assert liver_entry(book, code="10200004").coding.property_type == LIVER  # meaning from SNOMED
    assert liver_entry(book, code=10200004).coding.property_type == LIVER
    assert liver_entry(book, type="kidney").coding.property_type == KIDNEY  # a structure name
    given = CodeInput(value="10200004", meaning="Hepar")
    assert liver_entry(book, code=given).coding.property_type == Code("10200004", "SCT", "Hepar")
    known = CodeInput(value="10200004")
    assert liver_entry(book, code=known).coding.property_type == LIVER
    local = liver_entry(book, code="L-123", scheme="99LOCAL").coding
    assert local.property_type == Code("L-123", "99LOCAL", "Liver")  # the entry's name as meaning
    assert local.category == ANATOMICAL_STRUCTURE  # "Liver" is known: its category is kept


def test_unknown_name_with_a_code_is_anatomical_by_default(book: CodeBook) -> None:
    segments = segments_from_entries(
        "m", [SegmentEntry(name="Blorp", code="10200004"), "spleen"], LABELS, book
    )
    coding = segments[1].coding
    assert (coding.property_type, coding.category, coding.property_type_modifier) == (
        LIVER,
        ANATOMICAL_STRUCTURE,
        None,
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"code": "10200004", "type": "10200004"}, "gives both code and type"),
        ({"code": CodeInput(value="X1", scheme="99LOCAL")}, "code X1 (99LOCAL) needs a meaning"),
        ({"code": "blorp"}, "code 'blorp' is neither a code value nor a known structure name"),
    ],
)
def test_code_refusals(book: CodeBook, fields: dict[str, Any], expected: str) -> None:
    message = refusal(book, [SegmentEntry(name="Liver", **fields), "spleen"])
    assert "segment_names[0] ('Liver')" in message and expected in message


def test_unknown_names_without_code_are_reported_together(book: CodeBook) -> None:
    message = refusal(book, ["Blorp", "Zorp"])
    assert (
        "no SNOMED CT code found for 2 segment name(s): segment_names[0] 'Blorp', segment_names[1] 'Zorp'"
        in message
    )


# ------------------------------------------------------------------ category, modifier, region


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"category": "tissue"}, TISSUE),
        ({"category": "Morphologically Abnormal Structure"}, ABNORMAL),
        ({"category": "85756007"}, TISSUE),
        ({"category": 85756007}, TISSUE),
        ({"category_number": "49755003"}, ABNORMAL),
        (
            {"category": CodeInput(value="C1", scheme="99LOCAL", meaning="Local")},
            Code("C1", "99LOCAL", "Local"),
        ),
    ],
)
def test_category_forms(book: CodeBook, fields: dict[str, Any], expected: Code) -> None:
    assert liver_entry(book, **fields).coding.category == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"modifier": "Right"}, RIGHT),
        ({"modifier": "7771000"}, LEFT),
        ({"modifier": CodeInput(value="7771000")}, LEFT),
    ],
)
def test_modifier_forms(book: CodeBook, fields: dict[str, Any], expected: Code) -> None:
    assert liver_entry(book, **fields).coding.property_type_modifier == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"anatomic_region": "kidney"}, KIDNEY),
        ({"anatomic_region": "10200004"}, LIVER),
        (
            {"anatomic_region": CodeInput(value="R1", scheme="99LOCAL", meaning="Region")},
            Code("R1", "99LOCAL", "Region"),
        ),
    ],
)
def test_anatomic_region_forms(book: CodeBook, fields: dict[str, Any], expected: Code) -> None:
    assert liver_entry(book, **fields).coding.anatomic_region == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"category": "tissue", "category_number": "85756007"}, "gives both category and category_number"),
        ({"category": "blorp"}, "category 'blorp' is not a CID 7150 category name"),
        ({"category": "123"}, "category code 123 is unknown"),
        ({"modifier": "upper"}, "modifier 'upper' is not left, right or bilateral"),
        ({"modifier": "123"}, "modifier code 123 is unknown"),
        ({"anatomic_region": "123"}, "anatomic_region code 123 is unknown"),
        ({"anatomic_region": "blorp"}, "anatomic_region 'blorp' is not a known structure name"),
    ],
)
def test_coding_refusals(book: CodeBook, fields: dict[str, Any], expected: str) -> None:
    message = refusal(book, [SegmentEntry(name="Liver", **fields), "spleen"])
    assert "segment_names[0] ('Liver')" in message and expected in message


def test_entry_fields_are_carried(book: CodeBook) -> None:
    s = liver_entry(book, label="Hepar", description="whole liver", color=(1, 2, 3), tracking_id="liv")
    assert (s.label, s.description, s.color, s.tracking_id, s.tracking_uid) == (
        "Hepar",
        "whole liver",
        (1, 2, 3),
        "liv",
        None,
    )


# ------------------------------------------------------------------ label checks and tracking UIDs


def test_template_labels_must_be_the_dataset_labels() -> None:
    coding = SegmentCoding(category=ANATOMICAL_STRUCTURE, property_type=LIVER)
    both = {v: SegmentSpec(label_value=v, label=n, coding=coding) for v, n in LABELS.items()}
    check_template_labels("m", both, LABELS)
    with pytest.raises(SpecError, match=r"model 'm': the dcmqi template describes label values \[1\] but"):
        check_template_labels("m", {1: both[1]}, LABELS)


def test_label_names_from_another_source() -> None:
    check_label_names("m", {1: "Liver", 2: "Spleen"}, LABELS, "the class map")  # spelling is free
    with pytest.raises(SpecError, match=r"model 'm': the class map has 1 labels but dataset\.json has 2"):
        check_label_names("m", {1: "liver"}, LABELS, "the class map")
    with pytest.raises(
        SpecError, match=r"the class map names label 2 'kidney' but dataset\.json names it 'spleen'"
    ):
        check_label_names("m", {1: "liver", 2: "kidney"}, LABELS, "the class map")


def test_tracking_ids_and_uids_come_in_pairs() -> None:
    coding = SegmentCoding(category=ANATOMICAL_STRUCTURE, property_type=LIVER)
    segments = {
        1: SegmentSpec(1, "Liver", coding, tracking_id="liver-1"),
        2: SegmentSpec(2, "Spleen", coding, tracking_uid="2.25.77"),
        3: SegmentSpec(3, "Kidney", coding, tracking_id="k", tracking_uid="2.25.78"),
        4: SegmentSpec(4, "Other", coding),
    }
    out = with_tracking_uids("model-a", segments)
    assert (out[1].tracking_id, out[1].tracking_uid) == (
        "liver-1",
        derive_uid("model-a", "tracking", "liver-1"),
    )
    assert with_tracking_uids("model-b", segments)[1].tracking_uid != out[1].tracking_uid
    assert (out[2].tracking_id, out[2].tracking_uid) == ("Spleen", "2.25.77")
    assert out[3] == segments[3] and out[4] == segments[4]
