"""Read a dcmqi SEG metadata template (the JSON ``itkimage2segimage`` takes) into our segment objects.

Used for ``metadata: {path: template.json}`` in model-serve-spec.yaml. Read: ``segmentAttributes``
(a list per input file, flattened; ``labelID`` = label value), each segment's ``SegmentLabel``,
``SegmentDescription``, ``SegmentAlgorithmType``/``Name``, the property category/type/modifier and
anatomic region/modifier code sequences, ``recommendedDisplayRGBValue``, ``TrackingIdentifier`` and
``TrackingUniqueIdentifier``; and the series-level ``SeriesDescription``, ``SeriesNumber``,
``BodyPartExamined``, ``ContentCreatorName``, ``ContentLabel``, ``ContentDescription`` and
``ClinicalTrial*`` fields. Legacy SNOMED-RT codes (scheme ``SRT``) are converted to SNOMED CT (``SCT``)
where pydicom knows the mapping.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydicom.sr.coding import Code

from inference.args import describe_validation_error
from inference.codes import standard_category
from inference.errors import SpecError
from inference.segments import RGB, OutputFields, SegmentCoding, SegmentSpec

logger = logging.getLogger(__name__)


class _CodeItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    CodeValue: str = Field(min_length=1)
    CodingSchemeDesignator: str = Field(min_length=1)
    CodeMeaning: str = Field(min_length=1)

    def code(self) -> Code:
        return to_sct(Code(self.CodeValue, self.CodingSchemeDesignator, self.CodeMeaning))


class _SegmentAttributes(BaseModel):
    model_config = ConfigDict(extra="ignore")

    labelID: int = Field(ge=1, le=65535)
    SegmentLabel: str | None = None
    SegmentDescription: str | None = None
    SegmentAlgorithmType: Literal["AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"] = "AUTOMATIC"
    SegmentAlgorithmName: str | None = None
    SegmentedPropertyCategoryCodeSequence: _CodeItem
    SegmentedPropertyTypeCodeSequence: _CodeItem
    SegmentedPropertyTypeModifierCodeSequence: _CodeItem | None = None
    AnatomicRegionSequence: _CodeItem | None = None
    AnatomicRegionModifierSequence: _CodeItem | None = None
    recommendedDisplayRGBValue: tuple[int, int, int] | None = None
    TrackingIdentifier: str | None = None
    TrackingUniqueIdentifier: str | None = None

    @field_validator("recommendedDisplayRGBValue")
    @classmethod
    def _v_rgb(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and not all(0 <= v <= 255 for v in value):
            raise ValueError(f"recommendedDisplayRGBValue must be three values 0-255, got {list(value)}")
        return value


class _Template(BaseModel):
    model_config = ConfigDict(extra="ignore")

    segmentAttributes: list[list[_SegmentAttributes]] = Field(min_length=1)
    SeriesDescription: str | None = None
    SeriesNumber: int | None = Field(default=None, ge=0, le=2**31 - 1)
    BodyPartExamined: str | None = None
    ContentCreatorName: str | None = None
    ContentLabel: str | None = None
    ContentDescription: str | None = None
    ClinicalTrialSeriesID: str | None = None
    ClinicalTrialTimePointID: str | None = None
    ClinicalTrialCoordinatingCenterName: str | None = None
    ClinicalTrialSeriesDescription: str | None = None
    ClinicalTrialTimePointDescription: str | None = None


@dataclass(frozen=True)
class DcmqiTemplate:
    """What a dcmqi template says: segments by label value, the algorithm (if named), series fields."""

    segments: dict[int, SegmentSpec]
    algorithm_name: str | None
    algorithm_type: Literal["AUTOMATIC", "SEMIAUTOMATIC"]
    output: OutputFields


def to_sct(code: Code) -> Code:
    """A legacy SNOMED-RT (``SRT``) code as SNOMED CT when pydicom knows the mapping, else unchanged."""
    if code.scheme_designator != "SRT":
        return code
    try:
        from pydicom.sr._snomed_dict import mapping  # the SRT <-> SCT table pydicom itself uses
    except ImportError:  # pragma: no cover - depends on pydicom internals
        return code
    sct_value = mapping.get("SRT", {}).get(code.value)
    return code if sct_value is None else Code(sct_value, "SCT", code.meaning)


def read_dcmqi_template(path: Path) -> DcmqiTemplate:
    """Parse a dcmqi SEG metadata JSON file; :class:`SpecError` names the file and the problem."""
    try:
        raw: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"dcmqi template {path} cannot be read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"dcmqi template {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"dcmqi template {path} must hold a JSON object, got {type(raw).__name__}")
    try:
        template = _Template.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"dcmqi template {path} is invalid: {describe_validation_error(exc)}") from exc

    segments: dict[int, SegmentSpec] = {}
    names: set[str] = set()
    types: set[str] = set()
    for group in template.segmentAttributes:
        for item in group:
            if item.labelID in segments:
                raise SpecError(f"dcmqi template {path} describes labelID {item.labelID} twice")
            segments[item.labelID] = _segment(item)
            if item.SegmentAlgorithmName:
                names.add(item.SegmentAlgorithmName)
            types.add(item.SegmentAlgorithmType)
    if not segments:
        raise SpecError(f"dcmqi template {path} describes no segments (segmentAttributes is empty)")
    if "MANUAL" in types:
        raise SpecError(f"dcmqi template {path}: SegmentAlgorithmType MANUAL does not fit a model's output")
    if len(names) > 1:
        raise SpecError(f"dcmqi template {path} names several algorithms: {', '.join(sorted(names))}")
    output = OutputFields(
        series_description=template.SeriesDescription,
        series_number=template.SeriesNumber,
        body_part_examined=template.BodyPartExamined,
        content_creator_name=template.ContentCreatorName,
        content_label=template.ContentLabel,
        content_description=template.ContentDescription,
        clinical_trial_series_id=template.ClinicalTrialSeriesID,
        clinical_trial_time_point_id=template.ClinicalTrialTimePointID,
        clinical_trial_coordinating_center_name=template.ClinicalTrialCoordinatingCenterName,
        clinical_trial_series_description=template.ClinicalTrialSeriesDescription,
        clinical_trial_time_point_description=template.ClinicalTrialTimePointDescription,
    )
    return DcmqiTemplate(
        segments=dict(sorted(segments.items())),
        algorithm_name=next(iter(names), None),
        algorithm_type="SEMIAUTOMATIC" if "SEMIAUTOMATIC" in types else "AUTOMATIC",
        output=output,
    )


def _segment(item: _SegmentAttributes) -> SegmentSpec:
    def optional(code: _CodeItem | None) -> Code | None:
        return None if code is None else code.code()

    property_type = item.SegmentedPropertyTypeCodeSequence.code()
    color: RGB | None = item.recommendedDisplayRGBValue
    coding = SegmentCoding(
        category=standard_category(item.SegmentedPropertyCategoryCodeSequence.code()),
        property_type=property_type,
        property_type_modifier=optional(item.SegmentedPropertyTypeModifierCodeSequence),
        anatomic_region=optional(item.AnatomicRegionSequence),
        anatomic_region_modifier=optional(item.AnatomicRegionModifierSequence),
    )
    return SegmentSpec(
        label_value=item.labelID,
        label=item.SegmentLabel or property_type.meaning,
        coding=coding,
        description=item.SegmentDescription,
        tracking_id=item.TrackingIdentifier,
        tracking_uid=item.TrackingUniqueIdentifier,
        color=color,
    )
