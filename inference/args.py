"""Inference arguments: nnunet_serve's request parameter names, validated, with per-stage values.

A model's ``default_args`` (model-serve-spec.yaml) and a request's overrides are both
:class:`InferenceArgs`; :func:`merge` lays overrides over defaults (unknown keys are an error naming
them). Parameters that nnunet_serve applies per cascade stage may be given as a list with one value
per stage; :meth:`InferenceArgs.for_stage` picks stage ``i``'s value and returns a flat
:class:`StageArgs`.

Per-stage lists: ``checkpoint_name``, ``proba_threshold``, ``min_confidence``, ``cascade_mode``,
``min_intersection`` and ``crop_padding`` are per stage when given as a list. ``use_folds`` and
``class_idx`` are lists already, so they are per stage only when given as a list of lists (or, for
``use_folds``, a list mixing lists and ``"all"``; for ``class_idx``, a list holding lists or
``null``): ``use_folds: [0, 1]`` means folds 0 and 1 for every stage, ``use_folds: [[0, 1], "all"]``
means folds 0 and 1 for stage 0 and every fold for stage 1. A per-stage list of one value applies to
every stage; otherwise its length must equal the number of stages.

``crop_padding`` is an int (voxels per side), a float (fraction of the box size per side) or, as in
nnunet_serve, a list of exactly three such values, one per axis in (x, y, z) order; per-stage values
of it are then a list holding such values or ``null`` (``[null, [4, 4, 2]]``). A plain list of three
numbers is always the per-axis form.

Cascade keys (nnunet_serve's meaning, see :mod:`inference.cascade`): ``series_folders`` gives each
stage's inputs (a list per stage, or one flat list for a single stage): a request series index,
``from:<model>``, ``from:<model>=k``, ``from:<model>[k]``, or any other text, which stands for the
next request series in order (nnunet_serve's folder names: the n-th such name is series n).
``intersect_with`` / ``crop_from`` (per stage): ``from:<model>`` or ``from:<model>=k``, the mask the
stage is intersected with / cropped to instead of the previous stage's output.
``remove_objects_smaller_than`` (per stage): 26-connected components of a label with fewer voxels
are removed (with ``proba_threshold``: replaces the fixed 10-voxel minimum). ``seg_each_stage``: a
SEG (and the other DICOM outputs) for every stage, not only the last.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inference.errors import ArgsError, InferenceError
from inference.stage_inputs import parse_stage_input

CascadeMode: TypeAlias = Literal["intersect", "crop"]
Padding: TypeAlias = int | float | tuple[int | float, int | float, int | float] | None
PaddingInput: TypeAlias = int | float | list[int | float] | None
Folds: TypeAlias = list[int] | Literal["all"]
ClassIdx: TypeAlias = int | list[int] | None

_CHECKPOINT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.pth$")
_SUFFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

T = TypeVar("T")


def _check_fraction(name: str, value: float | None, *, low_open: bool = False) -> None:
    if value is None:
        return
    if low_open and not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    if not low_open and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_folds(value: Folds) -> None:
    if value == "all":
        return
    if not value:
        raise ValueError("use_folds must name at least one fold (or be 'all')")
    if any(f < 0 for f in value):
        raise ValueError(f"use_folds must be fold numbers >= 0, got {value}")
    if len(set(value)) != len(value):
        raise ValueError(f"use_folds lists a fold twice: {value}")


def _check_class_idx(value: ClassIdx) -> None:
    values = [value] if isinstance(value, int) else (value or [])
    if any(v < 1 for v in values):
        raise ValueError(f"class_idx must be label values >= 1 (0 is background), got {value}")


def _check_checkpoint(value: str) -> None:
    if not _CHECKPOINT_RE.fullmatch(value):
        raise ValueError(f"checkpoint_name must be a file name ending in .pth, got {value!r}")


def _check_padding(value: PaddingInput) -> None:
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != 3:
        raise ValueError(f"crop_padding per axis needs three values (x, y, z), got {value}")
    for item in values:
        if isinstance(item, list) or (item is not None and item < 0):
            raise ValueError(f"crop_padding must be >= 0, got {value}")


def _check_mask_ref(name: str, value: str | None) -> None:
    if value is None:
        return
    try:
        ref = parse_stage_input(value)
    except InferenceError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    if ref.model is None or ref.channel is not None:
        raise ValueError(f"{name} must be from:<model> or from:<model>=k, got {value!r}")


def _check_series_item(value: int | str) -> None:
    if isinstance(value, str) and not value.strip().startswith("from:") and not value.strip().isdigit():
        if not value.strip():
            raise ValueError("series_folders entries must not be empty")
        return  # a folder name: the next request series in order
    try:
        parse_stage_input(value)
    except InferenceError as exc:
        raise ValueError(f"series_folders: {exc}") from exc


class StageArgs(BaseModel):
    """The arguments of one cascade stage, every per-stage value resolved to a single value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    use_folds: tuple[int, ...] | Literal["all"]
    checkpoint_name: str
    tta: bool
    tile_step_size: float
    proba_threshold: float | None
    min_confidence: float | None
    class_idx: tuple[int, ...] | None
    min_intersection: float
    crop_padding: Padding
    cascade_mode: CascadeMode
    remove_objects_smaller_than: int | None
    intersect_with: str | None
    crop_from: str | None
    save_proba_map: bool
    save_nifti_inputs: bool
    save_nifti_output: bool
    save_rt_struct_output: bool
    bvalue_for_filtering: float | None
    suffix: str | None


class InferenceArgs(BaseModel):
    """Request parameters (nnunet_serve names). Every field has a default, so ``InferenceArgs()`` is the
    built-in default set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_folds: Folds | list[Folds] = Field(default_factory=lambda: [0])
    checkpoint_name: str | list[str] = "checkpoint_final.pth"
    tta: bool = False
    tile_step_size: float = 0.5
    proba_threshold: float | list[float | None] | None = None
    min_confidence: float | list[float | None] | None = None
    class_idx: ClassIdx | list[ClassIdx] = None
    min_intersection: float | list[float] = 0.1
    crop_padding: int | float | list[int | float] | list[PaddingInput] | None = None
    cascade_mode: CascadeMode | list[CascadeMode] = "intersect"
    remove_objects_smaller_than: int | list[int | None] | None = None
    intersect_with: str | list[str | None] | None = None
    crop_from: str | list[str | None] | None = None
    series_folders: list[list[int | str]] | list[int | str] | None = None
    seg_each_stage: bool = False
    save_proba_map: bool = False
    save_nifti_inputs: bool = False
    save_nifti_output: bool = False
    save_rt_struct_output: bool = False
    bvalue_for_filtering: float | None = None
    suffix: str | None = None

    @field_validator("use_folds")
    @classmethod
    def _v_folds(cls, value: Folds | list[Folds]) -> Folds | list[Folds]:
        for item in _per_stage_folds(value):
            _check_folds(item)
        return value

    @field_validator("class_idx")
    @classmethod
    def _v_class_idx(cls, value: ClassIdx | list[ClassIdx]) -> ClassIdx | list[ClassIdx]:
        for item in _per_stage_class_idx(value):
            _check_class_idx(item)
        return value

    @field_validator("checkpoint_name")
    @classmethod
    def _v_checkpoint(cls, value: str | list[str]) -> str | list[str]:
        for item in _as_stages(value):
            _check_checkpoint(item)
        return value

    @field_validator("tile_step_size")
    @classmethod
    def _v_step(cls, value: float) -> float:
        _check_fraction("tile_step_size", value, low_open=True)
        return value

    @field_validator("proba_threshold", "min_confidence", "min_intersection")
    @classmethod
    def _v_fractions(cls, value: Any, info: Any) -> Any:
        for item in _as_stages(value):
            _check_fraction(info.field_name, item)
        return value

    @field_validator("crop_padding")
    @classmethod
    def _v_padding(cls, value: Any) -> Any:
        for item in _per_stage_padding(value):
            _check_padding(item)
        return value

    @field_validator("remove_objects_smaller_than")
    @classmethod
    def _v_min_objects(cls, value: Any) -> Any:
        for item in _as_stages(value):
            if item is not None and item < 1:
                raise ValueError(f"remove_objects_smaller_than must be >= 1 voxel, got {item}")
        return value

    @field_validator("intersect_with", "crop_from")
    @classmethod
    def _v_mask_refs(cls, value: Any, info: Any) -> Any:
        for item in _as_stages(value):
            _check_mask_ref(info.field_name, item)
        return value

    @field_validator("series_folders")
    @classmethod
    def _v_series_folders(cls, value: Any) -> Any:
        for stage in series_folder_lists(value) or []:
            if not stage:
                raise ValueError("series_folders: a stage needs at least one input")
            for item in stage:
                _check_series_item(item)
        return value

    def stage_inputs(self) -> list[list[int | str]] | None:
        """``series_folders`` as one input list per stage, folder names replaced by series
        indexes (the n-th name of a stage is series n)."""
        lists = series_folder_lists(self.series_folders)
        if lists is None:
            return None
        return [_placeholders_to_series(stage) for stage in lists]

    @field_validator("bvalue_for_filtering")
    @classmethod
    def _v_bvalue(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"bvalue_for_filtering must be >= 0, got {value}")
        return value

    @field_validator("suffix")
    @classmethod
    def _v_suffix(cls, value: str | None) -> str | None:
        if value is not None and not _SUFFIX_RE.fullmatch(value):
            raise ValueError(
                f"suffix must be 1-64 characters of letters, digits, '_', '-', '.', got {value!r}"
            )
        return value

    def stage_counts(self) -> dict[str, int]:
        """Fields given per stage, with their number of values (1 = the same for every stage)."""
        counts: dict[str, int] = {}
        for name, values in self._stage_values().items():
            if len(values) > 1:
                counts[name] = len(values)
        return counts

    def check_stages(self, n_stages: int) -> None:
        """Raise :class:`ArgsError` unless every per-stage list has 1 or ``n_stages`` values."""
        for name, count in self.stage_counts().items():
            if count != n_stages:
                raise ArgsError(f"{name} has {count} per-stage values but the cascade has {n_stages} stages")

    def for_stage(self, index: int) -> StageArgs:
        """Stage ``index``'s arguments (0-based)."""
        if index < 0:
            raise ArgsError(f"stage index must be >= 0, got {index}")
        picked: dict[str, Any] = {}
        for name, values in self._stage_values().items():
            if len(values) == 1:
                picked[name] = values[0]
            elif index < len(values):
                picked[name] = values[index]
            else:
                raise ArgsError(f"{name} has {len(values)} per-stage values; no value for stage {index}")
        folds = picked["use_folds"]
        class_idx = picked["class_idx"]
        return StageArgs(
            use_folds="all" if folds == "all" else tuple(folds),
            checkpoint_name=picked["checkpoint_name"],
            tta=self.tta,
            tile_step_size=self.tile_step_size,
            proba_threshold=picked["proba_threshold"],
            min_confidence=picked["min_confidence"],
            class_idx=(class_idx,) if isinstance(class_idx, int) else _tuple_or_none(class_idx),
            min_intersection=picked["min_intersection"],
            crop_padding=tuple(padding) if isinstance(padding := picked["crop_padding"], list) else padding,
            cascade_mode=picked["cascade_mode"],
            remove_objects_smaller_than=picked["remove_objects_smaller_than"],
            intersect_with=picked["intersect_with"],
            crop_from=picked["crop_from"],
            save_proba_map=self.save_proba_map,
            save_nifti_inputs=self.save_nifti_inputs,
            save_nifti_output=self.save_nifti_output,
            save_rt_struct_output=self.save_rt_struct_output,
            bvalue_for_filtering=self.bvalue_for_filtering,
            suffix=self.suffix,
        )

    def _stage_values(self) -> dict[str, list[Any]]:
        return {
            "use_folds": _per_stage_folds(self.use_folds),
            "class_idx": _per_stage_class_idx(self.class_idx),
            "checkpoint_name": _as_stages(self.checkpoint_name),
            "proba_threshold": _as_stages(self.proba_threshold),
            "min_confidence": _as_stages(self.min_confidence),
            "min_intersection": _as_stages(self.min_intersection),
            "crop_padding": _per_stage_padding(self.crop_padding),
            "cascade_mode": _as_stages(self.cascade_mode),
            "remove_objects_smaller_than": _as_stages(self.remove_objects_smaller_than),
            "intersect_with": _as_stages(self.intersect_with),
            "crop_from": _as_stages(self.crop_from),
        }


def _tuple_or_none(value: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


def _as_stages(value: T | list[T]) -> list[T]:
    if isinstance(value, list):
        if not value:
            raise ValueError("a per-stage list needs at least one value")
        return value
    return [value]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _per_stage_padding(value: Any) -> list[Any]:
    """A list of three numbers is one per-axis padding; any other list is per stage."""
    if isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value):
        return [value]
    return _as_stages(value)


def series_folder_lists(value: Any) -> list[list[int | str]] | None:
    """``series_folders`` as a list per stage (a flat list is one stage)."""
    if value is None:
        return None
    if value and all(isinstance(item, list) for item in value):
        return [list(item) for item in value]
    return [list(value)]  # the type allows no mix of lists and plain entries


def _placeholders_to_series(stage: list[int | str]) -> list[int | str]:
    out: list[int | str] = []
    position = 0
    for item in stage:
        text = item.strip() if isinstance(item, str) else None
        if text is not None and not text.startswith("from:") and not text.isdigit():
            out.append(position)
            position += 1
        else:
            out.append(item)
    return out


def _per_stage_folds(value: Folds | list[Folds]) -> list[Folds]:
    if value == "all":
        return ["all"]
    assert isinstance(value, list)
    if value and all(isinstance(v, int) for v in value):
        return [value]  # type: ignore[list-item]
    if not value:
        return [[]]
    return list(value)  # type: ignore[arg-type]


def _per_stage_class_idx(value: ClassIdx | list[ClassIdx]) -> list[ClassIdx]:
    if value is None or isinstance(value, int):
        return [value]
    if all(isinstance(v, int) for v in value):
        return [value]  # type: ignore[list-item]
    return list(value)


# Names pydantic puts in error locations for the member of a union it tried (not field names).
_UNION_TAGS = frozenset(
    {"str", "int", "float", "bool", "list", "dict", "tuple", "none", "SegmentEntry", "CodeInput"}
)


def describe_validation_error(error: ValidationError) -> str:
    """One ``path: message`` per problem. pydantic reports every member of a union; union tags are
    dropped from paths, and a member's type mismatch is dropped when another member got further."""
    found: list[tuple[str, str, str]] = []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part.isidentifier() and part not in _UNION_TAGS:
                path += f".{part}" if path else part
        found.append((path, item["msg"].removeprefix("Value error, "), item["type"]))
    seen: dict[str, None] = {}
    for path, message, kind in found:
        mismatch = kind.endswith("_type") or kind in ("literal_error", "model_type", "dict_type")
        if mismatch and any(other != path and other.startswith(path) for other, _, _ in found):
            continue
        line = message if not path or message.startswith(path) else f"{path}: {message}"
        seen.setdefault(line, None)
    return "; ".join(seen)


def parse_args(values: Mapping[str, Any] | None, *, where: str = "inference arguments") -> InferenceArgs:
    """Validate a mapping into :class:`InferenceArgs`; :class:`ArgsError` names unknown keys, bad values."""
    data = dict(values or {})
    unknown = sorted(set(data) - set(InferenceArgs.model_fields))
    if unknown:
        raise ArgsError(
            f"{where}: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(InferenceArgs.model_fields))}"
        )
    try:
        return InferenceArgs.model_validate(data)
    except ValidationError as exc:
        raise ArgsError(f"{where}: {describe_validation_error(exc)}") from exc


def args_problems(values: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Every problem of ``values`` as ``(key, message)``: unknown keys and invalid values, each key
    on its own (fields are validated independently, so checking them one by one is exact)."""
    problems: list[tuple[str, str]] = []
    known = sorted(InferenceArgs.model_fields)
    for key, value in dict(values or {}).items():
        if key not in InferenceArgs.model_fields:
            problems.append((str(key), f"unknown parameter; known: {', '.join(known)}"))
            continue
        try:
            InferenceArgs.model_validate({key: value})
        except ValidationError as exc:
            message = describe_validation_error(exc)
            problems.append((key, message.removeprefix(f"{key}: ")))
    return problems


def merge(
    defaults: InferenceArgs | None, overrides: Mapping[str, Any] | InferenceArgs | None
) -> InferenceArgs:
    """``overrides`` laid over ``defaults`` (the built-in defaults when ``None``).

    Only the keys an override names replace a default (for an :class:`InferenceArgs` override: the
    fields set explicitly when it was built). Unknown keys raise :class:`ArgsError` naming them."""
    base = defaults.model_dump(exclude_unset=True) if defaults is not None else {}
    if overrides is None:
        extra: dict[str, Any] = {}
    elif isinstance(overrides, InferenceArgs):
        extra = overrides.model_dump(exclude_unset=True)
    else:
        extra = dict(overrides)
    return parse_args({**base, **extra}, where="inference arguments")
