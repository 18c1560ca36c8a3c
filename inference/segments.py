"""Value objects describing what a model's output means in DICOM terms.

Built by :mod:`inference.spec` (from inline metadata, a dcmqi template or a TotalSegmentator task)
and consumed by :mod:`inference.seg`. Plain frozen dataclasses; codes are ``pydicom.sr.coding.Code``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

AlgorithmType = Literal["AUTOMATIC", "SEMIAUTOMATIC"]

# CID 7162 "Surface Processing Algorithm Families"
ARTIFICIAL_INTELLIGENCE: Code = codes.cid7162.ArtificialIntelligence
# CID 7150 "Segmentation Property Categories"
ANATOMICAL_STRUCTURE: Code = codes.cid7150.AnatomicalStructure
MORPHOLOGICALLY_ABNORMAL_STRUCTURE: Code = codes.cid7150.MorphologicallyAbnormalStructure

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class SegmentCoding:
    """Codes for one segment: category, type and the optional modifiers and region."""

    category: Code
    property_type: Code
    property_type_modifier: Code | None = None
    anatomic_region: Code | None = None
    anatomic_region_modifier: Code | None = None
    color: RGB | None = None


@dataclass(frozen=True)
class SegmentSpec:
    """One model label as a DICOM segment. ``label_value`` is the value in the model's label map and
    the segment number in the SEG."""

    label_value: int
    label: str
    coding: SegmentCoding
    description: str | None = None
    tracking_id: str | None = None
    tracking_uid: str | None = None
    color: RGB | None = None

    @property
    def display_color(self) -> RGB | None:
        """Explicit colour, else the colour the code book suggests, else ``None`` (derive one)."""
        return self.color or self.coding.color


@dataclass(frozen=True)
class AlgorithmInfo:
    """Segment Algorithm Identification."""

    name: str
    version: str
    family: Code = ARTIFICIAL_INTELLIGENCE
    type: AlgorithmType = "AUTOMATIC"
    source: str | None = None


@dataclass(frozen=True)
class OutputFields:
    """Series-level attributes of the SEG. ``None`` = the writer's documented default."""

    series_description: str | None = None
    series_number: int | None = None
    manufacturer: str | None = None
    manufacturer_model_name: str | None = None
    software_versions: str | None = None
    device_serial_number: str | None = None
    body_part_examined: str | None = None
    content_label: str | None = None
    content_description: str | None = None
    content_creator_name: str | None = None
    clinical_trial_series_id: str | None = None
    clinical_trial_time_point_id: str | None = None
    clinical_trial_coordinating_center_name: str | None = None
    clinical_trial_series_description: str | None = None
    clinical_trial_time_point_description: str | None = None
