"""Per-slice geometry and rescale read from headers: one ``SliceInfo`` per single-frame file, or one
per frame of an enhanced multi-frame file (functional groups). No pixel data is touched here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from inference.errors import SeriesError

Vec3 = tuple[float, float, float]
Orientation = tuple[float, float, float, float, float, float]

# Attributes that tell stacked acquisitions apart (several images at one position), in the order they
# are reported: name -> (keyword or tag, where to look for an enhanced frame: functional group keyword)
STACK_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("TemporalPositionIdentifier", "TemporalPositionIdentifier", ""),
    ("TemporalPositionIndex", "TemporalPositionIndex", "FrameContentSequence"),
    ("StackID", "StackID", "FrameContentSequence"),
    ("DiffusionBValue", "DiffusionBValue", "MRDiffusionSequence"),
    ("EchoTime", "EchoTime", ""),
    ("EffectiveEchoTime", "EffectiveEchoTime", "MREchoSequence"),
    ("EchoNumbers", "EchoNumbers", ""),
    ("TriggerTime", "TriggerTime", ""),
    ("AcquisitionNumber", "AcquisitionNumber", ""),
    ("ImageType", "ImageType", ""),
)


@dataclass(frozen=True)
class SliceInfo:
    """What the geometry step needs to know about one 2D image (a file or one frame of a file)."""

    source: int  # index of the dataset in the read order
    frame: int | None  # 0-based frame index in a multi-frame file, None for single-frame files
    label: str  # for messages: "instance 12 (a1b2.dcm)" or "frame 7 of a1b2.dcm"
    sop_instance_uid: str
    position: Vec3 | None
    orientation: Orientation | None
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) as in DICOM
    nominal_spacing: float | None  # SpacingBetweenSlices or SliceThickness (only used for one slice)
    rows: int
    columns: int
    slope: float
    intercept: float
    localizer: bool
    header: Dataset = field(repr=False, compare=False)  # the file's dataset
    groups: tuple[Dataset | None, ...] = field(default=(), repr=False, compare=False)  # frame's groups

    def stack_values(self) -> tuple[tuple[str, str], ...]:
        """(attribute, value) pairs of STACK_ATTRIBUTES, read when a message needs them."""
        if self.frame is None:
            return tuple((name, _text(self.header.get(keyword))) for name, keyword, _ in STACK_ATTRIBUTES)
        return _frame_stack_values(self.header, self.groups)


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def _vec3(value: Any) -> Vec3 | None:
    v = _floats(value, 3)
    return (v[0], v[1], v[2]) if v else None


def _orientation(value: Any) -> Orientation | None:
    v = _floats(value, 6)
    return (v[0], v[1], v[2], v[3], v[4], v[5]) if v else None


def _pair(value: Any) -> tuple[float, float] | None:
    v = _floats(value, 2)
    return (v[0], v[1]) if v else None


def _float(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _nominal_spacing(ds: Dataset | None) -> float | None:
    if ds is None:
        return None
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _float(ds.get(keyword), 0.0)
        if value > 0:
            return value
    return None


def _is_localizer(image_type: Any) -> bool:
    if image_type is None:
        return False
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return any(str(v).strip().upper() == "LOCALIZER" for v in values)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return "\\".join(str(v) for v in value)
    except TypeError:
        return str(value)


def slice_from_file(ds: Dataset, source: int, path: Path) -> SliceInfo:
    """The SliceInfo of a single-frame image file."""
    instance = ds.get("InstanceNumber")
    label = f"instance {instance} ({path.name})" if instance not in (None, "") else path.name
    return SliceInfo(
        source=source,
        frame=None,
        label=label,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        position=_vec3(ds.get("ImagePositionPatient")),
        orientation=_orientation(ds.get("ImageOrientationPatient")),
        pixel_spacing=_pair(ds.get("PixelSpacing")),
        nominal_spacing=_nominal_spacing(ds),
        rows=int(ds.get("Rows", 0)),
        columns=int(ds.get("Columns", 0)),
        slope=_float(ds.get("RescaleSlope"), 1.0),
        intercept=_float(ds.get("RescaleIntercept"), 0.0),
        localizer=_is_localizer(ds.get("ImageType")),
        header=ds,
    )


def _group_item(groups: Sequence[Dataset | None], sequence: str) -> Dataset | None:
    """The first item of functional group ``sequence`` found in ``groups`` (per-frame before shared)."""
    for group in groups:
        if group is None:
            continue
        seq = group.get(sequence)
        if seq:
            item: Dataset = seq[0]
            return item
    return None


def _frame_type_localizer(groups: Sequence[Dataset | None]) -> bool:
    for sequence in ("CTImageFrameTypeSequence", "MRImageFrameTypeSequence", "PETFrameTypeSequence"):
        item = _group_item(groups, sequence)
        if item is not None and _is_localizer(item.get("FrameType")):
            return True
    return False


def _frame_stack_values(ds: Dataset, groups: Sequence[Dataset | None]) -> tuple[tuple[str, str], ...]:
    values = []
    for name, keyword, sequence in STACK_ATTRIBUTES:
        if sequence:
            item = _group_item(groups, sequence)
            value = item.get(keyword) if item is not None else None
        else:
            value = ds.get(keyword)
        values.append((name, _text(value)))
    return tuple(values)


def is_multiframe(ds: Dataset) -> bool:
    """True for files whose frames carry their own geometry (functional groups)."""
    return "PerFrameFunctionalGroupsSequence" in ds


def slices_from_multiframe(ds: Dataset, source: int, path: Path) -> list[SliceInfo]:
    """One SliceInfo per frame of an enhanced (or legacy converted enhanced) multi-frame image."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != frames:
        raise SeriesError(
            f"{path}: NumberOfFrames is {frames} but PerFrameFunctionalGroupsSequence has "
            f"{len(per_frame)} items"
        )
    shared_seq = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_seq[0] if shared_seq else None
    file_localizer = _is_localizer(ds.get("ImageType"))
    slices = []
    for index, frame_groups in enumerate(per_frame):
        groups = [frame_groups, shared]
        position_item = _group_item(groups, "PlanePositionSequence")
        orientation_item = _group_item(groups, "PlaneOrientationSequence")
        measures = _group_item(groups, "PixelMeasuresSequence")
        transform = _group_item(groups, "PixelValueTransformationSequence")
        slope = _float(transform.get("RescaleSlope") if transform else ds.get("RescaleSlope"), 1.0)
        intercept = _float(
            transform.get("RescaleIntercept") if transform else ds.get("RescaleIntercept"), 0.0
        )
        slices.append(
            SliceInfo(
                source=source,
                frame=index,
                label=f"frame {index + 1} of {path.name}",
                sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                position=_vec3(position_item.get("ImagePositionPatient") if position_item else None),
                orientation=_orientation(
                    orientation_item.get("ImageOrientationPatient") if orientation_item else None
                ),
                pixel_spacing=_pair(measures.get("PixelSpacing") if measures else None),
                nominal_spacing=_nominal_spacing(measures),
                rows=int(ds.get("Rows", 0)),
                columns=int(ds.get("Columns", 0)),
                slope=slope,
                intercept=intercept,
                localizer=file_localizer or _frame_type_localizer(groups),
                header=ds,
                groups=(frame_groups, shared),
            )
        )
    return slices
