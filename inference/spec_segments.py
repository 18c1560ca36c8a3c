"""Segment descriptions for a model: from inline ``segment_names``, a dcmqi template or the model's
own label names, checked against the labels in dataset.json. Every error names the model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from pydantic import ValidationError
from pydicom.sr.coding import Code

from inference.args import describe_validation_error
from inference.codes import CodeBook, snake_key
from inference.errors import SpecError
from inference.segments import ANATOMICAL_STRUCTURE, SegmentCoding, SegmentSpec
from inference.spec_schema import CodeInput, CodeLike, SegmentEntry
from inference.uids import derive_uid

logger = logging.getLogger(__name__)


def _label_list(labels: dict[int, str]) -> str:
    return ", ".join(f"{value}: {name}" for value, name in labels.items())


def segments_from_labels(
    model_id: str,
    labels: dict[int, str],
    codebook: CodeBook,
    *,
    what: str = "dataset.json label",
    fallback: SegmentCoding | None = None,
) -> dict[int, SegmentSpec]:
    """One segment per label, coded by the label's name (no metadata given); names without a code get
    ``fallback`` (with a warning) when given, else are an error."""
    segments: dict[int, SegmentSpec] = {}
    missing: list[str] = []
    for value, name in labels.items():
        coding = codebook.lookup(name)
        if coding is None and fallback is not None:
            logger.warning(
                "model %r: no SNOMED CT code for %s %r (value %d); coded as %s",
                model_id,
                what,
                name,
                value,
                fallback.property_type.meaning,
            )
            coding = fallback
        if coding is None:
            missing.append(f"{name!r} (value {value})")
            continue
        segments[value] = SegmentSpec(label_value=value, label=name, coding=coding)
    if missing:
        raise SpecError(
            f"model {model_id!r}: no SNOMED CT code found for {len(missing)} {what}(s): "
            f"{', '.join(missing)}; describe them in metadata.segment_names with a code"
        )
    return segments


def segments_from_entries(
    model_id: str,
    entries: Sequence[str | SegmentEntry],
    labels: dict[int, str],
    codebook: CodeBook,
) -> dict[int, SegmentSpec]:
    """``metadata.segment_names``: position = label value unless an entry says otherwise."""
    if len(entries) != len(labels):
        raise SpecError(
            f"model {model_id!r}: metadata.segment_names has {len(entries)} entries but dataset.json has "
            f"{len(labels)} labels ({_label_list(labels)})"
        )
    segments: dict[int, SegmentSpec] = {}
    missing: list[str] = []
    for position, raw in enumerate(entries, start=1):
        try:
            entry = SegmentEntry(name=raw) if isinstance(raw, str) else raw
        except ValidationError as exc:
            raise SpecError(
                f"model {model_id!r}: segment_names[{position - 1}]: {describe_validation_error(exc)}"
            ) from exc
        where = f"model {model_id!r}: segment_names[{position - 1}] ({entry.name!r})"
        value = _label_value(where, entry, position)
        if value not in labels:
            raise SpecError(
                f"{where} has label value {value}, which dataset.json lacks ({_label_list(labels)})"
            )
        if value in segments:
            raise SpecError(f"{where} describes label value {value}, already described by another entry")
        if entry.dataset_label is not None and snake_key(entry.dataset_label) != snake_key(labels[value]):
            raise SpecError(
                f"{where} says dataset_label {entry.dataset_label!r} but dataset.json names label value "
                f"{value} {labels[value]!r}"
            )
        if entry.code is None and entry.type is None and codebook.lookup(entry.name) is None:
            missing.append(f"segment_names[{position - 1}] {entry.name!r}")
            continue
        segments[value] = _segment(where, entry, value, codebook)
    if missing:
        raise SpecError(
            f"model {model_id!r}: no SNOMED CT code found for {len(missing)} segment name(s): "
            f"{', '.join(missing)}; give each code: {{value, scheme, meaning}} (or an SCT code value)"
        )
    return dict(sorted(segments.items()))


def check_template_labels(model_id: str, segments: dict[int, SegmentSpec], labels: dict[int, str]) -> None:
    """A dcmqi template must describe exactly the labels dataset.json has."""
    if set(segments) != set(labels):
        raise SpecError(
            f"model {model_id!r}: the dcmqi template describes label values {sorted(segments)} but "
            f"dataset.json has {sorted(labels)} ({_label_list(labels)})"
        )


def check_label_names(model_id: str, expected: dict[int, str], labels: dict[int, str], source: str) -> None:
    """Label names from another source (TotalSegmentator's class map) must equal dataset.json's."""
    if len(expected) != len(labels):
        raise SpecError(
            f"model {model_id!r}: {source} has {len(expected)} labels but dataset.json has {len(labels)}"
        )
    for value, name in expected.items():
        if snake_key(labels.get(value, "")) != snake_key(name):
            raise SpecError(
                f"model {model_id!r}: {source} names label {value} {name!r} but dataset.json names it "
                f"{labels.get(value)!r}"
            )


def with_tracking_uids(model_id: str, segments: dict[int, SegmentSpec]) -> dict[int, SegmentSpec]:
    """Segments with a tracking id but no tracking UID get a UID derived from model id and tracking id
    (DICOM wants both or neither)."""
    out: dict[int, SegmentSpec] = {}
    for value, segment in segments.items():
        if segment.tracking_id and not segment.tracking_uid:
            segment = replace(segment, tracking_uid=derive_uid(model_id, "tracking", segment.tracking_id))
        if segment.tracking_uid and not segment.tracking_id:
            segment = replace(segment, tracking_id=segment.label)
        out[value] = segment
    return out


def _label_value(where: str, entry: SegmentEntry, position: int) -> int:
    explicit = [v for v in (entry.number, entry.label if isinstance(entry.label, int) else None) if v]
    if len(set(explicit)) > 1:
        raise SpecError(f"{where} gives two label values: number {entry.number}, label {entry.label}")
    return explicit[0] if explicit else position


def _segment(where: str, entry: SegmentEntry, value: int, codebook: CodeBook) -> SegmentSpec:
    if entry.code is not None and entry.type is not None:
        raise SpecError(f"{where} gives both code and type; they are the same thing (the property type)")
    given = entry.code if entry.code is not None else entry.type
    looked_up = codebook.lookup(entry.name)
    if given is None:
        if looked_up is None:
            raise SpecError(
                f"{where}: no SNOMED CT code found for segment name {entry.name!r}; "
                "give code: {value, scheme, meaning} (or an SCT code value)"
            )
        coding = looked_up
    else:
        property_type = _code(where, "code", given, codebook, entry.scheme, default_meaning=entry.name)
        coding = SegmentCoding(
            category=looked_up.category if looked_up else ANATOMICAL_STRUCTURE,
            property_type=property_type,
            property_type_modifier=looked_up.property_type_modifier if looked_up else None,
            color=looked_up.color if looked_up else None,
        )
    if entry.category is not None and entry.category_number is not None:
        raise SpecError(f"{where} gives both category and category_number")
    category_input = entry.category if entry.category is not None else entry.category_number
    if category_input is not None:
        coding = replace(coding, category=_category(where, category_input, codebook))
    if entry.modifier is not None:
        coding = replace(coding, property_type_modifier=_modifier(where, entry.modifier, codebook))
    if entry.anatomic_region is not None:
        coding = replace(coding, anatomic_region=_region(where, entry.anatomic_region, codebook))
    label = entry.label if isinstance(entry.label, str) else entry.name
    return SegmentSpec(
        label_value=value,
        label=label,
        coding=coding,
        description=entry.description,
        tracking_id=entry.tracking_id,
        tracking_uid=entry.tracking_uid,
        color=entry.color,
    )


def _code(
    where: str, field: str, given: CodeLike, codebook: CodeBook, scheme: str, *, default_meaning: str
) -> Code:
    if isinstance(given, CodeInput):
        meaning = given.meaning or _known_meaning(given.value, given.scheme, codebook, default_meaning)
        if meaning is None:
            raise SpecError(f"{where}: {field} {given.value} ({given.scheme}) needs a meaning")
        return Code(given.value, given.scheme, meaning)
    text = str(given).strip()
    if text.isdigit() or scheme != "SCT":
        meaning = _known_meaning(text, scheme, codebook, default_meaning) or default_meaning
        return Code(text, scheme, meaning)
    looked_up = codebook.lookup(text)
    if looked_up is None:
        raise SpecError(f"{where}: {field} {text!r} is neither a code value nor a known structure name")
    return looked_up.property_type


def _known_meaning(value: str, scheme: str, codebook: CodeBook, name: str | None = None) -> str | None:
    if scheme != "SCT":
        return None
    code = codebook.sct_code(value, name)
    return None if code is None else code.meaning


def _named_or_coded(
    where: str,
    field: str,
    given: CodeLike,
    codebook: CodeBook,
    by_name: Callable[[str], Code | None],
    names_hint: str,
) -> Code:
    """A code given by name (looked up with ``by_name``), as {value, scheme, meaning}, or as a bare
    SNOMED CT code value whose meaning the code book knows."""
    if isinstance(given, str) and not given.strip().isdigit():
        code = by_name(given)
        if code is None:
            raise SpecError(f"{where}: {field} {given!r} is not {names_hint}")
        return code
    if isinstance(given, CodeInput):
        return _code(where, field, given, codebook, given.scheme, default_meaning=given.value)
    value = str(given).strip()
    meaning = _known_meaning(value, "SCT", codebook)
    if meaning is None:
        raise SpecError(f"{where}: {field} code {value} is unknown; give {{value, scheme, meaning}}")
    return Code(value, "SCT", meaning)


def _category(where: str, given: CodeLike, codebook: CodeBook) -> Code:
    return _named_or_coded(where, "category", given, codebook, codebook.category, "a CID 7150 category name")


def _modifier(where: str, given: CodeLike, codebook: CodeBook) -> Code:
    return _named_or_coded(
        where, "modifier", given, codebook, codebook.laterality, "left, right or bilateral"
    )


def _region(where: str, given: CodeLike, codebook: CodeBook) -> Code:
    if isinstance(given, CodeInput):
        return _code(where, "anatomic_region", given, codebook, given.scheme, default_meaning=given.value)
    text = str(given).strip()
    if text.isdigit():
        meaning = _known_meaning(text, "SCT", codebook)
        if meaning is None:
            raise SpecError(
                f"{where}: anatomic_region code {text} is unknown; give {{value, scheme, meaning}}"
            )
        return Code(text, "SCT", meaning)
    looked_up = codebook.lookup(text)
    if looked_up is None:
        raise SpecError(f"{where}: anatomic_region {text!r} is not a known structure name")
    return looked_up.property_type
