"""Write a phantom (or any int16 HU volume) as a DICOM CT series: one CT Image Storage file per slice,
or one Enhanced CT Image Storage multi-frame file.

Geometry: ``orientation`` is the row direction (x axis, along a row as the column index grows)
followed by the column direction (y axis); any orthonormal pair works, oblique included. Voxel
``[k, j, i]`` lies at ``origin + i*sx*row + j*sy*col + k*sz*normal`` with ``normal = row x col``, so
slice ``k``'s ImagePositionPatient is ``origin + k*sz*normal``.

Transfer syntaxes: Explicit/Implicit VR Little Endian and Deflated Explicit VR Little Endian as is;
RLE Lossless (pydicom's own encoder), JPEG-LS Lossless (pyjpegls) and JPEG 2000 Lossless
(pylibjpeg-openjpeg) compressed by pydicom. pydicom cannot encode JPEG Lossless (Process 14,
Selection Value 1, 1.2.840.10008.1.2.4.70): tests make it by writing Explicit VR Little Endian and
converting with ``/usr/bin/dcmcjpeg`` (run with ``TCP_NODELAY=1`` like every dcmtk tool).

The output is deterministic for given arguments, except the Study and Series Instance UIDs, which
default to fresh ones; SOP Instance UIDs are derived from the Series Instance UID and slice index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from inference.errors import PhantomError

logger = logging.getLogger(__name__)

UNCOMPRESSED_SYNTAXES: frozenset[str] = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
COMPRESSED_SYNTAXES: frozenset[str] = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless})
SUPPORTED_SYNTAXES: frozenset[str] = UNCOMPRESSED_SYNTAXES | COMPRESSED_SYNTAXES

MANUFACTURER = "nnunet-dicom-node"
MODEL_NAME = "Synthetic phantom"
SOFTWARE_VERSION = "dicom_node.demo.phantom 1"
_DATE = "20240101"
# Body Part Examined -> SNOMED CT anatomic region (DICOM PS3.16 Annex L), for Frame Anatomy.
_ANATOMY: dict[str, tuple[str, str]] = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "CHEST": ("51185008", "Thorax"),
    "PELVIS": ("816092008", "Pelvis"),
    "HEAD": ("69536005", "Head"),
    "WHOLEBODY": ("38266002", "Entire body"),
}
_TIME = "120000"


class ImageWithSpacing(Protocol):
    """What :func:`write_ct_series` needs from a phantom: an int16 HU image and its spacing."""

    @property
    def image(self) -> np.ndarray: ...

    @property
    def spacing(self) -> tuple[float, float, float]: ...


@dataclass(frozen=True)
class _Grid:
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    origin: np.ndarray
    spacing: tuple[float, float, float]

    def position(self, k: int) -> np.ndarray:
        result: np.ndarray = self.origin + k * self.spacing[2] * self.normal
        return result


@dataclass(frozen=True)
class _Pixels:
    frames: np.ndarray  # (z, y, x) stored values, uint16 or int16
    signed: bool
    slope: float
    intercept: float


def _ds(values: Sequence[float] | np.ndarray) -> list[DSfloat]:
    """Decimal strings of at most 16 characters (tiny rounding noise removed first)."""
    return [DSfloat(round(float(v), 10) + 0.0, auto_format=True) for v in values]


def _grid(orientation: Sequence[float], origin: Sequence[float], spacing: Sequence[float]) -> _Grid:
    if len(orientation) != 6:
        raise PhantomError(f"orientation needs 6 direction cosines (row then column), got {orientation}")
    if len(origin) != 3 or len(spacing) != 3:
        raise PhantomError(f"origin and spacing need 3 values each, got {origin} and {spacing}")
    if any(float(s) <= 0 for s in spacing):
        raise PhantomError(f"spacing must be positive (x, y, z) mm, got {spacing}")
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    if abs(np.linalg.norm(row) - 1) > 1e-6 or abs(np.linalg.norm(col) - 1) > 1e-6 or abs(row @ col) > 1e-6:
        shown = ", ".join(f"{float(v):g}" for v in orientation)
        raise PhantomError(f"orientation ({shown}) is not an orthonormal pair of unit vectors")
    return _Grid(
        row=row,
        col=col,
        normal=np.cross(row, col),
        origin=np.asarray(origin, dtype=np.float64),
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
    )


def _stored_pixels(image: np.ndarray, rescale: Sequence[float]) -> _Pixels:
    slope, intercept = float(rescale[0]), float(rescale[1])
    if slope == 0:
        raise PhantomError("rescale slope must not be 0")
    stored = np.rint((image.astype(np.float64) - intercept) / slope)
    lo, hi = float(stored.min()), float(stored.max())
    if lo >= 0 and hi <= np.iinfo(np.uint16).max:
        return _Pixels(stored.astype(np.uint16), False, slope, intercept)
    if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
        return _Pixels(stored.astype(np.int16), True, slope, intercept)
    raise PhantomError(f"rescale {tuple(rescale)} maps the image to {lo:.0f}..{hi:.0f}: not 16-bit")


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    return meta


@dataclass(frozen=True)
class _Ids:
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_description: str
    patient_id: str
    patient_name: str
    body_part: str
    modality: str
    series_number: int


def _common(ds: Dataset, ids: _Ids, pixels: _Pixels, rows: int, columns: int) -> None:
    """Patient, General Study, General Series, Frame of Reference, General Equipment, Image Pixel."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = ids.patient_name
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = ids.study_uid
    ds.StudyDate = _DATE
    ds.StudyTime = _TIME
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "Synthetic phantom"
    ds.Modality = ids.modality
    ds.SeriesInstanceUID = ids.series_uid
    ds.SeriesNumber = ids.series_number
    ds.SeriesDate = _DATE
    ds.SeriesTime = _TIME
    ds.SeriesDescription = ids.series_description
    ds.BodyPartExamined = ids.body_part
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = ids.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.ContentDate = _DATE
    ds.ContentTime = _TIME
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.signed else 0
    ds.BurnedInAnnotation = "NO"


def _set_pixel_data(ds: Dataset, frames: np.ndarray, transfer_syntax: str) -> None:
    if transfer_syntax in COMPRESSED_SYNTAXES:
        arr = frames[0] if frames.shape[0] == 1 and "NumberOfFrames" not in ds else frames
        ds.compress(transfer_syntax, arr)
        ds.LossyImageCompression = "00"
    else:
        ds.PixelData = np.ascontiguousarray(frames.astype(frames.dtype.newbyteorder("<"))).tobytes()
        ds["PixelData"].VR = "OW"


def _slice_dataset(
    ids: _Ids, grid: _Grid, pixels: _Pixels, k: int, sop_uid: str, transfer_syntax: str
) -> Dataset:
    nz, ny, nx = pixels.frames.shape
    ds = Dataset()
    ds.file_meta = _file_meta(CTImageStorage, sop_uid, transfer_syntax)
    _common(ds, ids, pixels, ny, nx)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = 1
    ds.ImagesInAcquisition = nz
    ds.PatientOrientation = ""
    ds.ImagePositionPatient = _ds(grid.position(k))
    ds.ImageOrientationPatient = _ds([*grid.row, *grid.col])
    ds.PixelSpacing = _ds([grid.spacing[1], grid.spacing[0]])
    ds.SliceThickness = _ds([grid.spacing[2]])[0]
    ds.SliceLocation = _ds([float(grid.position(k) @ grid.normal)])[0]
    ds.RescaleIntercept = _ds([pixels.intercept])[0]
    ds.RescaleSlope = _ds([pixels.slope])[0]
    ds.RescaleType = "HU"
    ds.KVP = ""
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    _set_pixel_data(ds, pixels.frames[k : k + 1], transfer_syntax)
    return ds


def _anatomy_code(body_part: str) -> Dataset:
    """SNOMED CT code of the anatomic region for a Body Part Examined value (whole body if unknown)."""
    value, meaning = _ANATOMY.get(body_part.upper(), _ANATOMY["WHOLEBODY"])
    return _item(CodeValue=value, CodingSchemeDesignator="SCT", CodeMeaning=meaning)


def _item(**elements: object) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _enhanced_dataset(ids: _Ids, grid: _Grid, pixels: _Pixels, sop_uid: str, transfer_syntax: str) -> Dataset:
    nz, ny, nx = pixels.frames.shape
    ds = Dataset()
    ds.file_meta = _file_meta(EnhancedCTImageStorage, sop_uid, transfer_syntax)
    _common(ds, ids, pixels, ny, nx)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.NumberOfFrames = nz
    ds.ContentQualification = "RESEARCH"
    ds.RecognizableVisualFeatures = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.AcquisitionContextSequence = []
    ds.LossyImageCompression = "00"

    dim_org_uid = generate_uid(entropy_srcs=[ids.series_uid, "dimension-organization"])
    ds.DimensionOrganizationType = "3D"
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dim_org_uid)]
    ds.DimensionIndexSequence = [
        _item(
            DimensionOrganizationUID=dim_org_uid,
            DimensionIndexPointer=0x00209056,  # Stack ID
            FunctionalGroupPointer=0x00209111,  # Frame Content Sequence
            DimensionDescriptionLabel="Stack ID",
        ),
        _item(
            DimensionOrganizationUID=dim_org_uid,
            DimensionIndexPointer=0x00209057,  # In-Stack Position Number
            FunctionalGroupPointer=0x00209111,
            DimensionDescriptionLabel="In-Stack Position Number",
        ),
    ]

    shared = Dataset()
    shared.PixelMeasuresSequence = [
        _item(
            PixelSpacing=_ds([grid.spacing[1], grid.spacing[0]]),
            SliceThickness=_ds([grid.spacing[2]])[0],
            SpacingBetweenSlices=_ds([grid.spacing[2]])[0],
        )
    ]
    shared.PlaneOrientationSequence = [_item(ImageOrientationPatient=_ds([*grid.row, *grid.col]))]
    shared.PixelValueTransformationSequence = [
        _item(
            RescaleIntercept=_ds([pixels.intercept])[0],
            RescaleSlope=_ds([pixels.slope])[0],
            RescaleType="HU",
        )
    ]
    shared.CTImageFrameTypeSequence = [
        _item(
            FrameType=["DERIVED", "PRIMARY", "VOLUME", "NONE"],
            PixelPresentation="MONOCHROME",
            VolumetricProperties="VOLUME",
            VolumeBasedCalculationTechnique="NONE",
        )
    ]
    shared.FrameAnatomySequence = [
        _item(AnatomicRegionSequence=[_anatomy_code(ids.body_part)], FrameLaterality="U")
    ]
    shared.FrameVOILUTSequence = [_item(WindowCenter="40", WindowWidth="400")]
    shared.IrradiationEventIdentificationSequence = [
        _item(IrradiationEventUID=generate_uid(entropy_srcs=[ids.series_uid, "irradiation"]))
    ]
    ds.SharedFunctionalGroupsSequence = [shared]

    per_frame = []
    for k in range(nz):
        frame = Dataset()
        frame.FrameContentSequence = [
            _item(
                StackID="1",
                InStackPositionNumber=k + 1,
                DimensionIndexValues=[1, k + 1],
                FrameAcquisitionDateTime=_DATE + _TIME,
                FrameReferenceDateTime=_DATE + _TIME,
                FrameAcquisitionDuration=0.0,
            )
        ]
        frame.PlanePositionSequence = [_item(ImagePositionPatient=_ds(grid.position(k)))]
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    _set_pixel_data(ds, pixels.frames, transfer_syntax)
    return ds


def _file_names(count: int, shuffle: bool, seed: int) -> list[str]:
    """``count`` names; shuffled ones are in no relation to the slice order."""
    numbers = np.random.default_rng(seed).permutation(count) if shuffle else np.arange(count)
    return [f"{'IM' if shuffle else 'slice'}{int(n):04d}.dcm" for n in numbers]


def write_ct_series(
    image_or_phantom: ImageWithSpacing | np.ndarray,
    out_dir: Path | str,
    *,
    spacing: Sequence[float] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "Phantom CT",
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (0, 0, 0),
    transfer_syntax: str = ExplicitVRLittleEndian,
    enhanced: bool = False,
    patient_id: str = "PHANTOM",
    patient_name: str = "Phantom^Demo",
    body_part: str = "ABDOMEN",
    modality: str = "CT",
    rescale: Sequence[float] = (1.0, -1024.0),
    shuffle_names: bool = False,
    seed: int = 0,
    series_number: int = 1,
) -> list[Path]:
    """Write ``image_or_phantom`` (HU, ``(z, y, x)``) to ``out_dir`` and return the file paths in
    slice order (one path when ``enhanced``).

    ``spacing`` ``(x, y, z)`` mm defaults to the phantom's own; it is required for a bare array.
    ``rescale`` is ``(slope, intercept)``: stored values are unsigned when they fit, else signed.
    ``shuffle_names`` gives file names unrelated to the slice order (deterministic per ``seed``).
    """
    if isinstance(image_or_phantom, np.ndarray):
        image = image_or_phantom
        if spacing is None:
            raise PhantomError("write_ct_series needs spacing=(x, y, z) for a bare array")
    else:
        image = image_or_phantom.image
        spacing = image_or_phantom.spacing if spacing is None else spacing
    if image.ndim != 3 or 0 in image.shape:
        raise PhantomError(f"expected a non-empty (z, y, x) image, got shape {image.shape}")
    syntax = str(transfer_syntax)
    if syntax not in SUPPORTED_SYNTAXES:
        hint = " (make it with /usr/bin/dcmcjpeg)" if syntax == JPEGLosslessSV1 else ""
        raise PhantomError(
            f"cannot write transfer syntax {syntax}{hint}; supported: {sorted(SUPPORTED_SYNTAXES)}"
        )

    grid = _grid(orientation, origin, spacing)
    pixels = _stored_pixels(image, rescale)
    series_uid = series_uid or generate_uid()
    ids = _Ids(
        study_uid=study_uid or generate_uid(),
        series_uid=series_uid,
        frame_of_reference_uid=generate_uid(entropy_srcs=[series_uid, "frame-of-reference"]),
        series_description=series_description,
        patient_id=patient_id,
        patient_name=patient_name,
        body_part=body_part,
        modality=modality,
        series_number=series_number,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if enhanced:
        sop_uid = generate_uid(entropy_srcs=[series_uid, "enhanced"])
        path = out / "enhanced_ct.dcm"
        _enhanced_dataset(ids, grid, pixels, sop_uid, syntax).save_as(path, enforce_file_format=True)
        logger.debug("wrote enhanced CT %s (%d frames, %s)", path, image.shape[0], syntax)
        return [path]

    paths = []
    for k, name in enumerate(_file_names(image.shape[0], shuffle_names, seed)):
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(k)])
        path = out / name
        _slice_dataset(ids, grid, pixels, k, sop_uid, syntax).save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.debug("wrote %d CT slices of series %s to %s (%s)", len(paths), series_uid, out, syntax)
    return paths
