"""The schema of model-serve-spec.yaml (pydantic), and its JSON-schema export.

Keys are nnunet_serve's. A few keys nnunet_serve accepts but that mean nothing here are tolerated
and ignored with a warning (:data:`IGNORED_TOP_KEYS`, :data:`IGNORED_MODEL_KEYS`); any other
unknown key is an error naming it.

Segment entries (``metadata.segment_names[]``): a string is a segment name; a dict may give

- ``name``: the structure's name, looked up for a SNOMED CT code unless ``code`` is given;
- ``label``: the text shown in viewers (SegmentLabel; default ``name``); an integer ``label`` is
  the label value instead (as ``number``);
- ``number``: the label value in the model output = segment number (default: position, from 1);
- ``dataset_label``: the dataset.json label name this entry describes (checked when given);
- ``code`` / ``type``: the property type, an SCT code value (``"367643001"``), a name to look up, or
  ``{value, scheme, meaning}``; ``scheme`` (default SCT) applies to a bare code value;
- ``category`` / ``category_number``: the property category (default Anatomical Structure, or
  Morphologically Abnormal Structure for lesions), a CID 7150 name, SCT value or code dict;
- ``modifier``: ``left`` / ``right`` / ``bilateral``, an SCT value or a code dict;
- ``anatomic_region``: a name, SCT value or code dict; ``description``; ``tracking_id`` and
  ``tracking_uid``; ``color`` ``[r, g, b]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

IGNORED_TOP_KEYS = frozenset({"load_timeout_min"})
IGNORED_MODEL_KEYS = frozenset({"is_totalseg", "tta"})

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"


class CodeInput(BaseModel):
    """A coded concept written out in full."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str = Field(min_length=1, max_length=64)
    scheme: str = Field(default="SCT", min_length=1, max_length=16)
    meaning: str | None = Field(default=None, min_length=1, max_length=64)


CodeLike = str | int | CodeInput


class SegmentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    label: str | int | None = None
    number: int | None = Field(default=None, ge=1, le=65535)
    dataset_label: str | None = None
    description: str | None = Field(default=None, max_length=64)
    code: CodeLike | None = None
    type: CodeLike | None = None
    scheme: str = Field(default="SCT", min_length=1, max_length=16)
    category: CodeLike | None = None
    category_number: str | int | None = None
    modifier: CodeLike | None = None
    anatomic_region: CodeLike | None = None
    tracking_id: str | None = Field(default=None, min_length=1, max_length=64)
    tracking_uid: str | None = Field(default=None, min_length=1, max_length=64)
    color: tuple[int, int, int] | None = None

    @field_validator("color")
    @classmethod
    def _v_color(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and not all(0 <= v <= 255 for v in value):
            raise ValueError(f"color must be three values 0-255, got {list(value)}")
        return value

    @field_validator("label")
    @classmethod
    def _v_label(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise ValueError(f"an integer label is a label value, 1-65535, got {value}")
        if isinstance(value, str) and not 1 <= len(value) <= 64:
            raise ValueError("label text must have 1-64 characters")
        return value


class MetadataInput(BaseModel):
    """Inline metadata, a dcmqi template (``path``), or both (inline fields then override the template's
    series fields; segments come from one of them only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    algorithm_name: str | None = Field(default=None, min_length=1, max_length=64)
    algorithm_version: str | None = Field(default=None, min_length=1, max_length=64)
    algorithm_family: CodeLike | None = None
    algorithm_type: Literal["AUTOMATIC", "SEMIAUTOMATIC"] | None = None
    algorithm_source: str | None = Field(default=None, max_length=64)
    segment_names: list[str | SegmentEntry] | None = Field(default=None, min_length=1)
    series_description: str | None = Field(default=None, max_length=64)
    series_number: int | None = Field(default=None, ge=0, le=2**31 - 1)
    manufacturer: str | None = Field(default=None, min_length=1, max_length=64)
    manufacturer_model_name: str | None = Field(default=None, min_length=1, max_length=64)
    software_versions: str | None = Field(default=None, min_length=1, max_length=64)
    device_serial_number: str | None = Field(default=None, min_length=1, max_length=64)
    body_part_examined: str | None = Field(default=None, min_length=1, max_length=16)
    content_label: str | None = Field(default=None, pattern=r"^[A-Z0-9_ ]{1,16}$")
    content_description: str | None = Field(default=None, max_length=64)
    content_creator_name: str | None = Field(default=None, max_length=64)
    clinical_trial_series_id: str | None = Field(default=None, max_length=64)
    clinical_trial_time_point_id: str | None = Field(default=None, max_length=64)
    clinical_trial_coordinating_center_name: str | None = Field(default=None, max_length=64)
    clinical_trial_series_description: str | None = Field(default=None, max_length=64)
    clinical_trial_time_point_description: str | None = Field(default=None, max_length=1024)


class ModelInput(BaseModel):
    """One ``models[]`` entry: an nnU-Net results folder (``rel_path``) or a TotalSegmentator task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID_PATTERN)
    rel_path: str | None = Field(default=None, min_length=1)
    totalseg_task: str | None = Field(default=None, min_length=1)
    totalseg_options: dict[str, Any] | None = Field(
        default=None, description="TotalSegmentator options (inference.totalseg_tasks.TotalSegOptions)"
    )
    name: str | None = Field(default=None, min_length=1, max_length=128)
    aliases: list[str] = Field(default_factory=list)
    metadata: MetadataInput | None = None
    min_mem: int = Field(default=4000, ge=0, description="free GPU memory (MiB) needed to start")
    default_args: dict[str, Any] | None = Field(
        default=None, description="defaults for request parameters (inference.args.InferenceArgs)"
    )

    @field_validator("aliases")
    @classmethod
    def _v_aliases(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not alias.strip():
                raise ValueError("aliases must not be empty strings")
        return value


class SpecHeader(BaseModel):
    """The top level with ``models`` unchecked: models are validated one by one to name the bad one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_folder: str = Field(min_length=1)
    aliases: dict[str, str] = Field(default_factory=dict)
    models: list[Any] = Field(min_length=1)
