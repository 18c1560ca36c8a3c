"""DICOM RT Structure Set from a label map: one ROI per model label, planar contours in the source
series' patient coordinates.

Written with pydicom (no rt-utils: it makes random UIDs and drawing a mask back needs its own
geometry); contours are traced with scikit-image's marching squares at the 0.5 iso-line of each
slice's binary mask, so a contour runs half-way between voxels inside and outside, and filling the
polygons (even-odd: holes are contours inside contours) gives back the mask. Straight runs are
thinned (``approximate_polygon``, 0.05 voxel tolerance).

Choices as for the SEG (:mod:`inference.seg`): ROI number = label value; every label of the model has
an ROI (an absent one has no contours); UIDs derived from the source series, model and variant, so a
re-run makes the same instance; each contour references its source image (and frame, for an
enhanced multi-frame source).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from inference.colors import derived_rgb
from inference.errors import SegWriteError
from inference.spec import ResolvedModel
from inference.uids import derive_uid
from inference.volume import Geometry

logger = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_STUDY_COMPONENT = "1.2.840.10008.3.1.2.3.1"  # the reference other RT objects use for the study
_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_TOLERANCE = 0.05


def rtstruct_uids(
    source_series_uid: str, model: ResolvedModel, uid_variant: str | None = None
) -> tuple[str, str]:
    base = [source_series_uid, model.id, model.version, *([uid_variant] if uid_variant else [])]
    return derive_uid(*base, "rtstruct-series"), derive_uid(*base, "rtstruct-instance")


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours of a 2D binary mask as (N, 2) (row, column) voxel coordinates, last point not
    repeated."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(mask.astype(np.uint8), 1)
    contours = []
    for contour in find_contours(padded, 0.5):
        points = approximate_polygon(contour, _TOLERANCE) - 1.0
        if len(points) > 1 and np.allclose(points[0], points[-1]):
            points = points[:-1]
        if len(points) >= 3:
            contours.append(points)
    return contours


def _image_refs(headers: Sequence[Dataset], frame_order: Sequence[int] | None, z: int) -> list[Dataset]:
    """A Contour Image item per label slice."""
    refs = []
    for k in range(z):
        item = Dataset()
        if len(headers) == 1 and frame_order is not None:
            item.ReferencedSOPClassUID = headers[0].SOPClassUID
            item.ReferencedSOPInstanceUID = headers[0].SOPInstanceUID
            item.ReferencedFrameNumber = int(frame_order[k]) + 1
        else:
            item.ReferencedSOPClassUID = headers[k].SOPClassUID
            item.ReferencedSOPInstanceUID = headers[k].SOPInstanceUID
        refs.append(item)
    return refs


def _ds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def build_rtstruct(
    labels: np.ndarray,
    geometry: Geometry,
    source_headers: Sequence[Dataset],
    model: ResolvedModel,
    *,
    frame_order: Sequence[int] | None = None,
    uid_variant: str | None = None,
    content_datetime: dt.datetime | None = None,
) -> Dataset:
    """An RTSTRUCT for ``labels`` ((z, y, x) on ``geometry``, the source series' grid)."""
    if labels.ndim != 3 or tuple(labels.shape) != tuple(geometry.shape):
        raise SegWriteError(
            f"model {model.id!r}: label map {labels.shape} is not on the grid {geometry.shape}"
        )
    z = labels.shape[0]
    if not (len(source_headers) == z or (len(source_headers) == 1 and frame_order is not None)):
        raise SegWriteError(f"model {model.id!r}: {z} label slices but {len(source_headers)} source headers")
    undescribed = sorted(set(np.unique(labels).tolist()) - {0} - set(model.segments))
    if undescribed:
        raise SegWriteError(f"model {model.id!r}: label map holds undescribed values {undescribed}")
    first = source_headers[0]
    source_series_uid = str(first.SeriesInstanceUID)
    frame_uid = first.get("FrameOfReferenceUID")
    if not frame_uid:
        raise SegWriteError(f"series {source_series_uid}: no FrameOfReferenceUID, contours cannot be placed")
    when = content_datetime or dt.datetime.now()
    series_uid, sop_uid = rtstruct_uids(source_series_uid, model, uid_variant)

    ds = Dataset()
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    for keyword in _PATIENT_STUDY:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_uid
    output = model.output
    number = output.series_number
    ds.SeriesNumber = (
        number if number is not None else min(int(first.get("SeriesNumber") or 0) + 2000, 2**31 - 1)
    )
    ds.SeriesDescription = (f"{output.series_description or model.name} RTSTRUCT")[:64]
    ds.SeriesDate = when.strftime("%Y%m%d")
    ds.SeriesTime = when.strftime("%H%M%S")
    ds.OperatorsName = ""
    ds.Manufacturer = output.manufacturer or "nnunet-dicom-node"
    ds.ManufacturerModelName = (output.manufacturer_model_name or model.algorithm.name)[:64]
    ds.SoftwareVersions = model.algorithm.version[:64]
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "AI"
    ds.StructureSetName = model.algorithm.name[:64]
    ds.StructureSetDate = when.strftime("%Y%m%d")
    ds.StructureSetTime = when.strftime("%H%M%S")

    refs = _image_refs(source_headers, frame_order, z)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = source_series_uid
    series_ref.ContourImageSequence = DicomSequence(
        list({(r.ReferencedSOPInstanceUID, r.get("ReferencedFrameNumber")): r for r in refs}.values())
    )
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = _STUDY_COMPONENT
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_uid
    frame_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame_ref])

    rois, contours_seq, observations = [], [], []
    for value, segment in sorted(model.segments.items()):
        roi = Dataset()
        roi.ROINumber = value
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = segment.label[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        item = Dataset()
        item.ReferencedROINumber = value
        item.ROIDisplayColor = list(segment.display_color or derived_rgb(segment.label, value))
        contours = _contours(labels == value, geometry, refs)
        if contours:
            item.ContourSequence = DicomSequence(contours)
        contours_seq.append(item)
        observation = Dataset()
        observation.ObservationNumber = value
        observation.ReferencedROINumber = value
        observation.RTROIInterpretedType = ""
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours_seq)
    ds.RTROIObservationsSequence = DicomSequence(observations)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RTSTRUCT_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    logger.info(
        "model %s, series %s: RTSTRUCT %s, %d contour(s)",
        model.id,
        source_series_uid,
        sop_uid,
        sum(len(item.get("ContourSequence", [])) for item in contours_seq),
    )
    return ds


def _contours(mask: np.ndarray, geometry: Geometry, refs: list[Dataset]) -> list[Dataset]:
    items: list[Dataset] = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for points in slice_contours(mask[k]):
            zyx = np.column_stack([np.full(len(points), float(k)), points])
            lps = geometry.index_to_lps(zyx)
            item = Dataset()
            image = Dataset()
            image.ReferencedSOPClassUID = refs[k].ReferencedSOPClassUID
            image.ReferencedSOPInstanceUID = refs[k].ReferencedSOPInstanceUID
            if "ReferencedFrameNumber" in refs[k]:
                image.ReferencedFrameNumber = refs[k].ReferencedFrameNumber
            item.ContourImageSequence = DicomSequence([image])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item.ContourNumber = len(items) + 1
            item.ContourData = [_ds(v) for v in lps.ravel()]
            items.append(item)
    return items


def rasterise(dataset: Dataset, geometry: Geometry) -> np.ndarray:
    """The label map an RTSTRUCT describes on ``geometry`` (even-odd fill of each ROI's contours;
    later ROIs over earlier ones). For checking round trips."""
    from skimage.draw import polygon

    labels = np.zeros(geometry.shape, dtype=np.uint16)
    inverse = np.linalg.inv(geometry.matrix() * np.asarray(geometry.spacing))
    for item in dataset.ROIContourSequence:
        value = int(item.ReferencedROINumber)
        mask = np.zeros(geometry.shape, dtype=bool)
        for contour in item.get("ContourSequence", []):
            lps = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            xyz = (lps - np.asarray(geometry.origin)) @ inverse.T
            k = round(float(xyz[0, 2]))
            rows, cols = polygon(xyz[:, 1], xyz[:, 0], shape=geometry.shape[1:])
            fill = np.zeros(geometry.shape[1:], dtype=bool)
            fill[rows, cols] = True
            mask[k] ^= fill
        labels[mask] = value
    return labels
