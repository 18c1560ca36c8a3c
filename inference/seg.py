"""DICOM SEG from a label map (highdicom), deterministic and small; atomic writing; reading back.

Choices (documented here because receivers and re-runs depend on them):

- BINARY segmentation; segment number = the model's label value, the same in every study.
  Every label of the model is described, present in this study or not (DICOM wants segment numbers
  1..N without gaps, and a stable number lets viewers and downstream tools rely on it); frames that
  are empty are omitted, so an absent segment has a description and no frames.
- The label map goes to highdicom as is ("label map" style input): no one-hot volume is ever built;
  highdicom compares one plane with one segment number at a time and bit-packs each frame at once.
- Empty result: ``empty_result="skip"`` returns ``None``; ``"empty_seg"`` writes a valid SEG with
  every segment described and a single empty frame per segment on the first source slice (highdicom
  would otherwise encode every slice of every segment, ~200 MB for 20 labels x 300 slices), still
  referencing every source instance at series level.
- UIDs: SeriesInstanceUID = derive_uid(source series UID, model id, model version, "series"),
  SOPInstanceUID = derive_uid(..., "instance") (plus ``uid_variant`` when given, e.g. a hash of
  folds/checkpoint when a request changes them), DimensionOrganizationUID derived the same way, so a
  re-run yields the same instance and a receiver can de-duplicate it.
- Dates and times: ContentDate/Time, SeriesDate/Time and InstanceCreationDate/Time are when the SEG
  was made (``content_datetime``, default now): a re-run has the same UIDs but new times. Pass a
  fixed ``content_datetime`` for byte-identical output.
- Series attributes: SeriesDescription / SeriesNumber / Manufacturer / ManufacturerModelName /
  SoftwareVersions / DeviceSerialNumber from the spec, else: "<model name> segmentation"; source
  SeriesNumber + 1000 (1000 without one); "nnunet-dicom-node"; the algorithm name; this package's and
  the algorithm's versions; the model version (which identifies the trained weights).
- Recommended display colours: the spec's / template's / TotalSegmentator's, else derived from the
  segment name (:mod:`inference.colors`), stored as CIELab.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code

from inference.atomic import atomic_write
from inference.colors import derived_rgb, to_cielab
from inference.errors import SegWriteError
from inference.spec import ResolvedModel
from inference.uids import derive_uid

logger = logging.getLogger(__name__)

EmptyResult = Literal["empty_seg", "skip"]
MANUFACTURER = "nnunet-dicom-node"
SERIES_NUMBER_OFFSET = 1000
_MAX_IS = 2**31 - 1


def seg_uids(source_series_uid: str, model: ResolvedModel, uid_variant: str | None = None) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the SEG for this source series and model."""
    base = [source_series_uid, model.id, model.version, *([uid_variant] if uid_variant else [])]
    return derive_uid(*base, "series"), derive_uid(*base, "instance")


def _software_version() -> str:
    try:
        return f"{MANUFACTURER} {package_version('nnunet-dicom-node')}"
    except PackageNotFoundError:  # pragma: no cover - the project is installed in every setup we run
        return MANUFACTURER


def _check_inputs(
    labels: np.ndarray, headers: Sequence[Dataset], frame_order: Sequence[int] | None, model: ResolvedModel
) -> np.ndarray:
    where = f"model {model.id!r}"
    if labels.ndim != 3:
        raise SegWriteError(f"{where}: label map must be 3D (z, y, x), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise SegWriteError(f"{where}: label map must hold integers, got {labels.dtype}")
    if not headers:
        raise SegWriteError(f"{where}: no source headers")
    z, rows, columns = labels.shape
    first = headers[0]
    if (int(first.Rows), int(first.Columns)) != (rows, columns):
        raise SegWriteError(
            f"{where}: label map slices are {rows}x{columns} but the source images are "
            f"{first.Rows}x{first.Columns}"
        )
    frames = int(first.get("NumberOfFrames", 1) or 1)
    if len(headers) == 1 and frames > 1:
        order = list(frame_order) if frame_order is not None else list(range(frames))
        if len(order) != z or len(set(order)) != z or not all(0 <= f < frames for f in order):
            raise SegWriteError(
                f"{where}: frame order {order[:8]}... does not map {z} label slices onto {frames} frames"
            )
    elif len(headers) != z:
        raise SegWriteError(f"{where}: label map has {z} slices but {len(headers)} source headers were given")
    if labels.dtype not in (np.uint8, np.uint16):
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > 65535:
            raise SegWriteError(f"{where}: label values must be 0..65535, got {low}..{high}")
        labels = labels.astype(np.uint8 if high < 256 else np.uint16)
    return labels


def _present_labels(labels: np.ndarray) -> np.ndarray:
    """Voxel count per label value, computed slice by slice (no full-volume temporary)."""
    top = int(labels.max()) if labels.size else 0
    counts = np.zeros(top + 1, dtype=np.int64)
    for plane in labels:
        counts += np.bincount(plane.ravel(), minlength=top + 1)
    return counts


def _descriptions(model: ResolvedModel) -> list[hd.seg.SegmentDescription]:
    algorithm = model.algorithm
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=algorithm.family,
        version=algorithm.version,
        source=algorithm.source,
    )
    descriptions = []
    for value, segment in sorted(model.segments.items()):
        coding = segment.coding
        rgb = segment.display_color or derived_rgb(segment.label, value)
        description = hd.seg.SegmentDescription(
            segment_number=value,
            segment_label=segment.label[:64],
            segmented_property_category=coding.category,
            segmented_property_type=coding.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues[algorithm.type],
            algorithm_identification=identification,
            tracking_uid=segment.tracking_uid,
            tracking_id=segment.tracking_id,
            anatomic_regions=[coding.anatomic_region] if coding.anatomic_region else None,
            display_color=to_cielab(rgb),
        )
        if coding.property_type_modifier is not None:
            item = description.SegmentedPropertyTypeCodeSequence[0]
            item.SegmentedPropertyTypeModifierCodeSequence = [_coded(coding.property_type_modifier)]
        if coding.anatomic_region is not None and coding.anatomic_region_modifier is not None:
            item = description.AnatomicRegionSequence[0]
            item.AnatomicRegionModifierSequence = [_coded(coding.anatomic_region_modifier)]
        if segment.description:
            description.SegmentDescription = segment.description[:64]
        descriptions.append(description)
    return descriptions


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning, code.scheme_version)


def _pixel_input(
    labels: np.ndarray, headers: Sequence[Dataset], frame_order: Sequence[int] | None
) -> np.ndarray:
    """The label map arranged as highdicom wants it: plane i <-> single-frame header i, or frame i+1
    of a multi-frame header (frames with no label slice stay empty)."""
    frames = int(headers[0].get("NumberOfFrames", 1) or 1)
    if len(headers) > 1 or frames == 1:
        return labels
    order = list(frame_order) if frame_order is not None else list(range(frames))
    if order == list(range(frames)):
        return labels
    arranged = np.zeros((frames, *labels.shape[1:]), dtype=labels.dtype)
    arranged[order] = labels
    return arranged


def _empty_input(labels: np.ndarray, headers: Sequence[Dataset]) -> tuple[np.ndarray, dict[str, object]]:
    """One empty plane at the first source slice, positioned explicitly."""
    first = headers[0]
    frames = int(first.get("NumberOfFrames", 1) or 1)
    if len(headers) == 1 and frames > 1:
        group = first.PerFrameFunctionalGroupsSequence[0]
        shared = first.SharedFunctionalGroupsSequence[0]
        position = group.PlanePositionSequence[0].ImagePositionPatient
        orientation_item = (
            group.PlaneOrientationSequence[0]
            if "PlaneOrientationSequence" in group
            else shared.PlaneOrientationSequence[0]
        )
        measures = (
            group.PixelMeasuresSequence[0]
            if "PixelMeasuresSequence" in group
            else shared.PixelMeasuresSequence[0]
        )
        orientation = orientation_item.ImageOrientationPatient
        pixel_spacing = measures.PixelSpacing
        thickness = measures.get("SliceThickness")
    else:
        position = first.ImagePositionPatient
        orientation = first.ImageOrientationPatient
        pixel_spacing = first.PixelSpacing
        thickness = first.get("SliceThickness")
    extras: dict[str, object] = {
        "plane_positions": [
            hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, [float(v) for v in position])
        ],
        "plane_orientation": hd.PlaneOrientationSequence(
            hd.CoordinateSystemNames.PATIENT, [float(v) for v in orientation]
        ),
        "pixel_measures": hd.PixelMeasuresSequence(
            pixel_spacing=[float(v) for v in pixel_spacing],
            slice_thickness=float(thickness) if thickness not in (None, "") else None,
        ),
        "omit_empty_frames": False,
    }
    return np.zeros((1, *labels.shape[1:]), dtype=labels.dtype), extras


def build_seg(
    labels: np.ndarray,
    source_headers: Sequence[Dataset],
    model: ResolvedModel,
    *,
    empty_result: EmptyResult = "empty_seg",
    series_description: str | None = None,
    series_number: int | None = None,
    content_creator_name: str | None = None,
    content_description: str | None = None,
    frame_order: Sequence[int] | None = None,
    uid_variant: str | None = None,
    content_datetime: dt.datetime | None = None,
    other_series: Sequence[Sequence[Dataset]] = (),
) -> Dataset | None:
    """A DICOM SEG for ``labels`` ((z, y, x), label values of ``model``) over ``source_headers``.
    ``other_series``: headers of further input series (extra channels), referenced too.

    ``source_headers``: one dataset per label slice, in label-map order (PixelData removed), or ONE
    enhanced multi-frame dataset whose frame ``frame_order[k]`` (default ``k``) is label slice ``k``.
    Returns ``None`` for an empty label map when ``empty_result="skip"``."""
    labels = _check_inputs(labels, source_headers, frame_order, model)
    counts = _present_labels(labels)
    undescribed = [v for v in np.flatnonzero(counts) if v != 0 and int(v) not in model.segments]
    if undescribed:
        raise SegWriteError(
            f"model {model.id!r}: label map holds values {', '.join(str(int(v)) for v in undescribed)} "
            f"that the model does not describe (labels: {', '.join(str(v) for v in model.segments)})"
        )
    present = [int(v) for v in np.flatnonzero(counts) if v != 0]
    first = source_headers[0]
    source_series_uid = str(first.SeriesInstanceUID)
    if not present and empty_result == "skip":
        logger.info(
            "model %s, series %s: empty result, no SEG (empty_result=skip)", model.id, source_series_uid
        )
        return None
    if empty_result not in ("empty_seg", "skip"):
        raise SegWriteError(f"empty_result must be 'empty_seg' or 'skip', got {empty_result!r}")

    series_uid, sop_uid = seg_uids(source_series_uid, model, uid_variant)
    when = content_datetime or dt.datetime.now()
    output = model.output
    if present:
        pixel_array = _pixel_input(labels, source_headers, frame_order)
        extras: dict[str, object] = {"omit_empty_frames": True}
    else:
        pixel_array, extras = _empty_input(labels, source_headers)
    number = series_number if series_number is not None else output.series_number
    if number is None:
        number = min(int(first.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET, _MAX_IS)
    description = series_description or output.series_description or f"{model.name} segmentation"
    try:
        seg = hd.seg.Segmentation(
            source_images=list(source_headers),
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(model),
            series_instance_uid=series_uid,
            series_number=number,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer=output.manufacturer or MANUFACTURER,
            manufacturer_model_name=(output.manufacturer_model_name or model.algorithm.name)[:64],
            software_versions=output.software_versions or _software_version(),
            device_serial_number=(output.device_serial_number or model.version)[:64],
            content_description=(
                content_description
                or output.content_description
                or f"{model.algorithm.name} {model.algorithm.version}"
            )[:64],
            content_creator_name=content_creator_name or output.content_creator_name,
            content_label=output.content_label or "SEGMENTATION",
            series_description=description[:64],
            content_date=when.date(),
            content_time=when.time(),
            series_date=when.date(),
            series_time=when.time(),
            **extras,  # type: ignore[arg-type]
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SegWriteError(
            f"model {model.id!r}, series {source_series_uid}: highdicom could not build the SEG: {exc}"
        ) from exc
    _finish(seg, model, source_series_uid, uid_variant, when, first)
    reference_other_series(seg, other_series)
    logger.info(
        "model %s, series %s: SEG %s with %d frame(s), segments present: %s",
        model.id,
        source_series_uid,
        sop_uid,
        int(seg.NumberOfFrames),
        ", ".join(str(v) for v in present) or "none",
    )
    return seg


def reference_other_series(dataset: Dataset, other_series: Sequence[Sequence[Dataset]]) -> None:
    """Add the instances of further input series to the Common Instance Reference of ``dataset``
    (``ReferencedSeriesSequence``; series of another study under
    ``StudiesContainingOtherReferencedInstancesSequence``)."""
    referenced = {str(item.SeriesInstanceUID) for item in dataset.get("ReferencedSeriesSequence", [])}
    for headers in other_series:
        if not headers or str(headers[0].SeriesInstanceUID) in referenced:
            continue
        first = headers[0]
        item = Dataset()
        item.SeriesInstanceUID = first.SeriesInstanceUID
        instances = []
        for header in {str(h.SOPInstanceUID): h for h in headers}.values():
            ref = Dataset()
            ref.ReferencedSOPClassUID = header.SOPClassUID
            ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
            instances.append(ref)
        item.ReferencedInstanceSequence = instances
        referenced.add(str(first.SeriesInstanceUID))
        if str(first.StudyInstanceUID) == str(dataset.StudyInstanceUID):
            if "ReferencedSeriesSequence" not in dataset:
                dataset.ReferencedSeriesSequence = []
            dataset.ReferencedSeriesSequence.append(item)
        else:
            study = Dataset()
            study.StudyInstanceUID = first.StudyInstanceUID
            study.ReferencedSeriesSequence = [item]
            if "StudiesContainingOtherReferencedInstancesSequence" not in dataset:
                dataset.StudiesContainingOtherReferencedInstancesSequence = []
            dataset.StudiesContainingOtherReferencedInstancesSequence.append(study)


def _finish(
    seg: Dataset,
    model: ResolvedModel,
    source_series_uid: str,
    variant: str | None,
    when: dt.datetime,
    source: Dataset,
) -> None:
    """Deterministic organisation UID, creation time, and the optional series attributes."""
    base = [source_series_uid, model.id, model.version, *([variant] if variant else [])]
    dim_uid = derive_uid(*base, "dimension-organization")
    for item in seg.DimensionOrganizationSequence:
        item.DimensionOrganizationUID = dim_uid
    for item in seg.DimensionIndexSequence:
        item.DimensionOrganizationUID = dim_uid
    seg.InstanceCreationDate = when.strftime("%Y%m%d")
    seg.InstanceCreationTime = when.strftime("%H%M%S.%f")
    for equipment in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in equipment:  # highdicom's own entry, stamped "now"
            equipment.ContributionDateTime = when.strftime("%Y%m%d%H%M%S.%f")
    output = model.output
    body_part = output.body_part_examined or source.get("BodyPartExamined")
    if body_part:
        seg.BodyPartExamined = str(body_part)[:16]
    trial_series = {
        "ClinicalTrialSeriesID": output.clinical_trial_series_id,
        "ClinicalTrialSeriesDescription": output.clinical_trial_series_description,
    }
    if any(trial_series.values()) or output.clinical_trial_coordinating_center_name:
        seg.ClinicalTrialCoordinatingCenterName = output.clinical_trial_coordinating_center_name or ""
        for keyword, value in trial_series.items():
            if value:
                setattr(seg, keyword, value)
    if output.clinical_trial_time_point_id or output.clinical_trial_time_point_description:
        seg.ClinicalTrialTimePointID = output.clinical_trial_time_point_id or ""
        if output.clinical_trial_time_point_description:
            seg.ClinicalTrialTimePointDescription = output.clinical_trial_time_point_description


def write_seg(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` as a DICOM file atomically and durably (:func:`inference.atomic.atomic_write`).
    A reader never sees a partial file."""
    target = Path(path)
    with atomic_write(target) as stream:
        dataset.save_as(stream, enforce_file_format=True)
    return target
