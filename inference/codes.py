"""Coded concepts for segment names: SNOMED CT property types, categories and laterality.

:class:`CodeBook` turns a segment name as people write it ("left kidney", "Left_Kidney",
"kidney_left", "Right UpperLobeOfLung", "LeftKidney") into a :class:`SegmentCoding`. Lookup order:

1. TotalSegmentator's own mapping (``totalsegmentator/resources/totalsegmentator_snomed_mapping.csv``
   in the installed package, read at run time) for its snake_case structure names;
2. a small alias table of common names whose SNOMED keyword differs (``small_bowel``,
   ``liver_segment_4``, ``vertebrae``...);
3. pydicom's SNOMED CT dictionary (``pydicom.sr.codedict.codes.SCT``): the name's words joined as a
   CamelCase keyword (case-insensitive), also tried singular and with a ``Structure`` suffix; a
   "left"/"right"/"bilateral" word that is not part of the keyword becomes the Segmented Property
   Type Modifier.

The category defaults to Anatomical Structure (SCT 91723000, CID 7150) and to Morphologically
Abnormal Structure (SCT 49755003) for lesion-like types (neoplasm, tumor, lesion, cyst, mass,
nodule, metastasis). Unknown names give ``None``; :mod:`inference.spec` turns that into a
``SpecError`` at start-up, so a SEG is never written with a made-up code.
"""

from __future__ import annotations

import csv
import importlib.resources
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from inference.segments import (
    ANATOMICAL_STRUCTURE,
    MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    RGB,
    SegmentCoding,
)

logger = logging.getLogger(__name__)

LEFT: Code = codes.SCT.Left
RIGHT: Code = codes.SCT.Right
BILATERAL: Code = codes.SCT.Bilateral
_LATERALITY = {"left": LEFT, "right": RIGHT, "bilateral": BILATERAL, "both": BILATERAL}

_ABNORMAL_KEYWORDS = frozenset({"neoplasm", "tumor", "lesion", "cyst", "mass", "nodule", "metastasis"})

_URINARY_BLADDER = Code("89837001", "SCT", "Urinary bladder")

# name (snake_case) -> SCT keyword in pydicom's dictionary, or an explicit code
_ALIASES: Mapping[str, str | Code] = {
    "body": "EntireBody",
    "whole_body": "EntireBody",
    "bladder": _URINARY_BLADDER,
    "urinary_bladder": _URINARY_BLADDER,
    "small_bowel": "SmallIntestine",
    "thyroid_gland": "Thyroid",
    "tumour": "Neoplasm",
    "vertebrae": "Vertebra",
    "lung_airways": "AirwayStructure",
    "airways": "AirwayStructure",
    "lung_arteries": "PulmonaryArtery",
    "lung_veins": "PulmonaryVein",
    **{
        f"liver_segment_{n}": f"CouinaudHepaticSegment{roman}"
        for n, roman in enumerate(("I", "II", "III", "IV", "V", "VI", "VII", "VIII"), start=1)
    },
}
# SNOMED CT semantic tags that pydicom keeps in some meanings; DICOM code meanings omit them
_SEMANTIC_TAG_RE = re.compile(r"\s*\((body structure|qualifier value|disorder|morphologic abnormality)\)$")

_TOTALSEG_PACKAGE = "totalsegmentator"
_TOTALSEG_CSV = ("resources", "totalsegmentator_snomed_mapping.csv")
_CAMEL_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def split_words(name: str) -> list[str]:
    """Words of a name: split on anything not a letter or digit, then on CamelCase boundaries."""
    words: list[str] = []
    for chunk in re.split(r"[^A-Za-z0-9]+", name):
        if chunk:
            words.extend(_CAMEL_RE.findall(chunk) or [chunk])
    return words


def snake_key(name: str) -> str:
    """``"Left Kidney"``, ``"LeftKidney"``, ``"left-kidney"`` -> ``"left_kidney"``."""
    return "_".join(w.lower() for w in split_words(name))


def _keyword(tokens: Iterable[str]) -> str:
    return "".join(t[:1].upper() + t[1:] for t in tokens)


def _singular(word: str) -> list[str]:
    lower = word.lower()
    out = []
    if lower.endswith("ae"):
        out.append(word[:-1])
    if lower.endswith("ies"):
        out.append(word[:-3] + "y")
    if lower.endswith("es"):
        out.append(word[:-2])
    if lower.endswith("s") and not lower.endswith("ss"):
        out.append(word[:-1])
    return out


@dataclass(frozen=True)
class _Entry:
    keyword: str
    code: Code


class CodeBook:
    """Name -> :class:`SegmentCoding`. Build once (``CodeBook.default()``) and pass it around."""

    def __init__(self, sct: Mapping[str, Code], curated: Mapping[str, SegmentCoding] | None = None) -> None:
        self._sct_by_lower = {k.lower(): _Entry(k, c) for k, c in sct.items()}
        self._sct_by_value: dict[str, list[Code]] = {}
        for code in sct.values():
            self._sct_by_value.setdefault(code.value, []).append(clean_meaning(code))
        self._curated = dict(curated or {})

    @classmethod
    def default(cls) -> CodeBook:
        """pydicom's SNOMED CT dictionary plus TotalSegmentator's mapping when that package is installed."""
        return cls(dict(codes.SCT.concepts), load_totalseg_mapping())

    def lookup(self, name: str) -> SegmentCoding | None:
        """Codes for a segment name, or ``None`` if nothing matches."""
        words = split_words(name)
        if not words:
            return None
        sides = [w.lower() for w in words if w.lower() in _LATERALITY]
        rest = [w for w in words if w.lower() not in _LATERALITY]
        if not rest:  # "left" alone is a qualifier, not a structure
            return None
        keys = [snake_key(name)]
        if len(sides) == 1 and rest:  # "left kidney" and "kidney_left" are the same structure
            keys += [f"{snake_key(_keyword(rest))}_{sides[0]}", f"{sides[0]}_{snake_key(_keyword(rest))}"]
        for key in keys:
            if key in self._curated:
                return self._curated[key]
        entry = self._alias(keys[0]) or self._find(words)
        if entry is not None:
            return self._coding(entry, None)
        if len(sides) == 1 and rest:
            entry = self._alias(snake_key(_keyword(rest))) or self._find(rest)
            if entry is not None:
                return self._coding(entry, _LATERALITY[sides[0]])
        return None

    def sct_code(self, value: str, name: str | None = None) -> Code | None:
        """The SNOMED CT concept with this code value, if pydicom knows it (for its meaning). pydicom
        lists some values under several meanings (64033007: "Kidney", "Endo-renal"...): the one
        matching ``name`` wins, else the shortest."""
        candidates = self._sct_by_value.get(value)
        if not candidates:
            return None
        if name:
            for code in candidates:
                if snake_key(code.meaning) == snake_key(name):
                    return code
        return min(candidates, key=lambda c: (len(c.meaning), c.meaning))

    def category(self, name: str) -> Code | None:
        """A CID 7150 category by name ("Anatomical Structure", "tissue"...)."""
        keyword = _keyword(split_words(name))
        for key, code in codes.cid7150.concepts.items():
            if key.lower() == keyword.lower():
                return code
        return None

    def laterality(self, name: str) -> Code | None:
        return _LATERALITY.get(name.strip().lower())

    def _alias(self, key: str) -> _Entry | None:
        target = _ALIASES.get(key)
        if isinstance(target, Code):
            return _Entry(key, target)
        return self._sct_by_lower.get(target.lower()) if target else None

    def _find(self, words: list[str]) -> _Entry | None:
        if not words:
            return None
        keyword = _keyword(words)
        candidates = [keyword, *(_keyword([*words[:-1], s]) for s in _singular(words[-1]))]
        candidates += [c + "Structure" for c in list(candidates)]
        for candidate in candidates:
            entry = self._sct_by_lower.get(candidate.lower())
            if entry is not None:
                return entry
        return None

    @staticmethod
    def _coding(entry: _Entry, modifier: Code | None) -> SegmentCoding:
        abnormal = entry.keyword.lower() in _ABNORMAL_KEYWORDS
        category = MORPHOLOGICALLY_ABNORMAL_STRUCTURE if abnormal else ANATOMICAL_STRUCTURE
        return SegmentCoding(
            category=category, property_type=clean_meaning(entry.code), property_type_modifier=modifier
        )


def clean_meaning(code: Code) -> Code:
    """The code with a trailing SNOMED semantic tag ("(body structure)") removed from its meaning."""
    meaning = _SEMANTIC_TAG_RE.sub("", code.meaning)
    if meaning == code.meaning:
        return code
    return Code(code.value, code.scheme_designator, meaning, code.scheme_version)


def load_totalseg_mapping() -> dict[str, SegmentCoding]:
    """TotalSegmentator's structure name -> codes table, or ``{}`` if the package is not installed."""
    try:
        resource = importlib.resources.files(_TOTALSEG_PACKAGE).joinpath(*_TOTALSEG_CSV)
        text = resource.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        logger.info("TotalSegmentator code mapping not available (%s); using pydicom's SNOMED CT only", exc)
        return {}
    table: dict[str, SegmentCoding] = {}
    for row in csv.DictReader(text.splitlines()):
        name = (row.get("Structure") or "").strip()
        category = _csv_code(row, "SegmentedPropertyCategoryCodeSequence")
        property_type = _csv_code(row, "SegmentedPropertyTypeCodeSequence")
        if not name or category is None or property_type is None:
            continue
        coding = SegmentCoding(
            category=standard_category(category),
            property_type=property_type,
            property_type_modifier=_csv_code(row, "SegmentedPropertyTypeModifierCodeSequence"),
            anatomic_region=_csv_code(row, "AnatomicRegionSequence"),
            anatomic_region_modifier=_csv_code(row, "AnatomicRegionModifierSequence"),
            color=_csv_rgb(row.get("DicomRGBColor")),
        )
        table[snake_key(name)] = coding
    return table


def _csv_code(row: Mapping[str, str], prefix: str) -> Code | None:
    value = (row.get(f"{prefix}.CodeValue") or "").strip()
    scheme = (row.get(f"{prefix}.CodingSchemeDesignator") or "").strip()
    meaning = (row.get(f"{prefix}.CodeMeaning") or "").strip()
    if not value or not scheme or not meaning:
        return None
    return Code(value, scheme, meaning)


def standard_category(code: Code) -> Code:
    """Map categories to their CID 7150 codes where the table uses another code for the same concept
    (TotalSegmentator writes Anatomical Structure as SCT 123037004 "Body structure")."""
    if code.scheme_designator == "SCT" and code.value == "123037004":
        return ANATOMICAL_STRUCTURE
    if code.scheme_designator == "SCT" and code.value == MORPHOLOGICALLY_ABNORMAL_STRUCTURE.value:
        return MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    return code


def _csv_rgb(text: str | None) -> RGB | None:
    if not text:
        return None
    try:
        r, g, b = (int(v) for v in text.split(","))
    except ValueError:
        return None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        return None
    return (r, g, b)
