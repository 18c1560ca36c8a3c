"""Named DIMSE status codes: descriptions and the warning/success classification, checked against
pynetdicom's own categories (PS3.7 Annex C)."""

from __future__ import annotations

import pytest
from pynetdicom.status import code_to_category

from dicom_node.net import dimse_status as st

NAMED = {
    st.SUCCESS: "Success",
    st.OUT_OF_RESOURCES: "Refused: out of resources",
    st.DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: data set does not match SOP class",
    st.CANNOT_UNDERSTAND: "Error: cannot understand",
    st.CANNOT_UNDERSTAND_INVALID_UID: "Error: cannot understand (invalid UID)",
    st.CANNOT_UNDERSTAND_MISSING_ATTRIBUTE: "Error: cannot understand (missing attribute)",
    st.CANNOT_UNDERSTAND_UNREADABLE: "Error: cannot understand (unreadable data set)",
    st.PROCESSING_FAILURE: "Failure: processing failure",
    st.COERCION_OF_DATA_ELEMENTS: "Warning: coercion of data elements",
    st.ELEMENTS_DISCARDED: "Warning: elements discarded",
    st.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING: "Warning: data set does not match SOP class",
}


def test_constant_values() -> None:
    assert (st.OUT_OF_RESOURCES, st.DATASET_DOES_NOT_MATCH_SOP_CLASS, st.CANNOT_UNDERSTAND) == (
        0xA700,
        0xA900,
        0xC000,
    )
    assert (st.COERCION_OF_DATA_ELEMENTS, st.ELEMENTS_DISCARDED) == (0xB000, 0xB006)
    assert st.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING == 0xB007
    assert (st.REJECT_NO_REASON, st.REJECT_CALLING_AE_NOT_RECOGNIZED, st.REJECT_CALLED_AE_NOT_RECOGNIZED) == (
        1,
        3,
        7,
    )


@pytest.mark.parametrize(("code", "text"), sorted(NAMED.items()))
def test_describe_named_codes(code: int, text: str) -> None:
    assert st.describe(code) == text


@pytest.mark.parametrize(
    ("code", "text"), [(0xA7FF, "status 0xA7FF"), (0x0122, "status 0x0122"), (0xFF00, "status 0xFF00")]
)
def test_describe_unknown_codes_in_hex(code: int, text: str) -> None:
    assert st.describe(code) == text


@pytest.mark.parametrize("code", [*NAMED, 0x0001, 0xB123, 0xBFFF, 0xA7FF, 0xC0FF, 0xFE00, 0xFF00, 0x0122])
def test_classification_agrees_with_pynetdicom(code: int) -> None:
    category = code_to_category(code)
    assert st.is_warning(code) is (category == "Warning")
    assert st.is_success(code) is (category == "Success")


def test_named_codes_describe_their_category() -> None:
    for code, text in NAMED.items():
        category = code_to_category(code)
        if category == "Warning":
            assert text.startswith("Warning:"), hex(code)
        elif category == "Failure":
            assert text.startswith(("Error:", "Refused:", "Failure:")), hex(code)
        else:
            assert category == "Success" and text == "Success"
