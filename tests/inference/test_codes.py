"""Segment names to SNOMED CT codes."""

from __future__ import annotations

import pytest

from inference.codes import CodeBook, snake_key, split_words


@pytest.fixture(scope="module")
def book() -> CodeBook:
    return CodeBook.default()


@pytest.mark.parametrize("name", ["left kidney", "Left_Kidney", "kidney_left", "LeftKidney", "Left Kidney"])
def test_spellings_of_left_kidney(book: CodeBook, name: str) -> None:
    coding = book.lookup(name)
    assert coding is not None
    assert coding.property_type.value == "64033007"  # Kidney
    assert coding.property_type_modifier is not None and coding.property_type_modifier.value == "7771000"
    assert coding.category.value == "91723000"
    assert coding.color == book.lookup("kidney_left").color  # type: ignore[union-attr]


def test_camel_case_keywords_and_laterality(book: CodeBook) -> None:
    coding = book.lookup("Right UpperLobeOfLung")
    assert coding is not None
    assert coding.property_type.meaning == "Upper lobe of lung"
    assert coding.property_type_modifier is not None and coding.property_type_modifier.meaning == "Right"


def test_laterality_inside_a_concept_is_kept(book: CodeBook) -> None:
    coding = book.lookup("left ventricle")
    assert coding is not None
    assert coding.property_type.meaning == "Left ventricle" and coding.property_type_modifier is None


def test_lesions_are_morphologically_abnormal(book: CodeBook) -> None:
    for name in ("tumor", "Neoplasm", "lesions", "Cyst"):
        coding = book.lookup(name)
        assert coding is not None, name
        assert coding.category.value == "49755003", name


def test_aliases_and_plurals(book: CodeBook) -> None:
    cases = {
        "small_bowel": "30315005",
        "bladder": "89837001",
        "liver_segment_4": "277958008",
        "vertebrae": "51282000",
        "kidneys": "64033007",
        "body": "38266002",
    }
    for name, value in cases.items():
        coding = book.lookup(name)
        assert coding is not None and coding.property_type.value == value, name


def test_totalsegmentator_names_use_its_table(book: CodeBook) -> None:
    coding = book.lookup("vertebrae_L1")
    assert coding is not None
    assert coding.property_type.meaning == "L1 vertebra"
    assert coding.color is not None
    assert coding.category.value == "91723000"  # its SCT 123037004 mapped to CID 7150's code


def test_semantic_tags_are_dropped_from_meanings(book: CodeBook) -> None:
    coding = book.lookup("UrinaryBladderStructure")
    assert coding is not None and coding.property_type.meaning == "Urinary bladder structure"


def test_unknown_names(book: CodeBook) -> None:
    assert book.lookup("blorp gland") is None
    assert book.lookup("") is None
    assert book.lookup("left") is None


def test_works_without_totalsegmentator_table() -> None:
    from pydicom.sr.codedict import codes

    plain = CodeBook(dict(codes.SCT.concepts))
    coding = plain.lookup("kidney_left")
    assert coding is not None and coding.property_type.value == "64033007" and coding.color is None


def test_word_splitting() -> None:
    assert split_words("Left UpperLobeOfLung") == ["Left", "Upper", "Lobe", "Of", "Lung"]
    assert snake_key("LeftKidney") == snake_key("left-kidney") == "left_kidney"


def test_meaning_by_code_value_prefers_the_name_then_the_shortest(book: CodeBook) -> None:
    kidney = book.sct_code("64033007")  # pydicom also lists it as "Endo-renal"
    assert kidney is not None and kidney.meaning == "Kidney"
    assert book.sct_code("64033007", "endo renal").meaning == "Endo-renal"  # type: ignore[union-attr]
    assert book.sct_code("999999999") is None
