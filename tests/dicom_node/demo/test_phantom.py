"""Phantoms: labels and intensities, determinism, and the DICOM CT series they are written as
(read back with pydicom and SimpleITK, validated with dciodvfy, JPEG Lossless made by dcmcjpeg)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dicom_node.demo.phantom import LABEL_NAMES, Phantom, make_phantom, write_ct_series
from inference.errors import PhantomError
from tests.support.tools import dciodvfy, dcmtk, peer_env

# Rotated 0.4 rad about z, then tilted 0.3 rad: an orthonormal row/column pair.
OBLIQUE = tuple(
    float(v)
    for v in (
        np.cos(0.4),
        np.sin(0.4),
        0.0,
        -np.sin(0.4) * np.cos(0.3),
        np.cos(0.4) * np.cos(0.3),
        -np.sin(0.3),
    )
)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(shape=(12, 40, 48), spacing=(6.0, 6.0, 8.0), seed=3)


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return np.asarray(ds.pixel_array, dtype=np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _normal(orientation: tuple[float, ...]) -> np.ndarray:
    return np.cross(np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float))


def test_default_phantom_has_distinct_labels_and_intensities() -> None:
    p = make_phantom(seed=0)
    assert p.image.shape == p.labels.shape == (32, 64, 64)
    assert p.image.dtype == np.int16 and p.labels.dtype == np.uint8
    assert p.spacing == (6.0, 6.0, 8.0)
    assert set(np.unique(p.labels)) == set(LABEL_NAMES)
    means = {label: float(np.median(p.image[p.labels == label])) for label in LABEL_NAMES}
    assert -1010 < means[0] < -990
    assert 0 <= means[1] <= 40
    assert 55 <= means[2] <= 85
    assert 145 <= means[3] <= 205
    # The bright unlabelled distractor (spine) is part of the body label.
    assert p.image[p.labels == 1].max() > 400
    assert p.image[p.labels == 0].max() < -900
    # Liver is the large organ, kidney the small one; both lie inside the body's outline.
    counts = np.bincount(p.labels.ravel(), minlength=4)
    assert counts[2] > 2 * counts[3] > 0
    # The kidney sits on the patient's left (+x), the liver on the right.
    liver_x = np.nonzero(p.labels == 2)[2].mean()
    kidney_x = np.nonzero(p.labels == 3)[2].mean()
    assert liver_x < 32 < kidney_x


def test_phantom_is_deterministic_per_seed() -> None:
    a, b, c = make_phantom(seed=7), make_phantom(seed=7), make_phantom(seed=8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("shape", [(24, 56, 80), (40, 80, 56), (8, 16, 16)])
def test_phantom_shapes(shape: tuple[int, int, int]) -> None:
    p = make_phantom(shape=shape, spacing=(5.0, 5.0, 5.0), seed=1)
    assert p.image.shape == shape and p.spacing == (5.0, 5.0, 5.0)
    assert {1, 2, 3} <= set(np.unique(p.labels))


@pytest.mark.parametrize("shape", [(32, 64), (2, 64, 64)])
def test_phantom_rejects_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(PhantomError, match="shape"):
        make_phantom(shape=shape)


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), OBLIQUE], ids=["axial", "oblique"])
def test_series_reads_back_with_geometry(
    phantom: Phantom, tmp_path: Path, orientation: tuple[float, ...]
) -> None:
    origin = (-100.0, 50.0, 12.5)
    paths = write_ct_series(
        phantom,
        tmp_path,
        spacing=phantom.spacing,
        orientation=orientation,
        origin=origin,
        series_uid="1.2.3.4",
    )
    assert len(paths) == phantom.image.shape[0]
    datasets = [pydicom.dcmread(p) for p in paths]
    normal = _normal(orientation)
    sx, sy, sz = phantom.spacing
    for k, ds in enumerate(datasets):
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.InstanceNumber == k + 1
        assert ds.ImagesInAcquisition == len(paths)
        assert ds.SeriesInstanceUID == "1.2.3.4"
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], np.asarray(origin) + k * sz * normal, atol=1e-6
        )
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=1e-9)
        assert [float(v) for v in ds.PixelSpacing] == [sy, sx]
        assert float(ds.SliceThickness) == sz
        assert ds.PixelRepresentation == 0  # default rescale (1, -1024) stores unsigned values
        np.testing.assert_array_equal(_hu(ds), phantom.image[k])
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    # SOP Instance UIDs derive from the series UID and the slice index.
    again = write_ct_series(phantom, tmp_path / "again", series_uid="1.2.3.4")
    assert [pydicom.dcmread(p).SOPInstanceUID for p in again] == [ds.SOPInstanceUID for ds in datasets]


def test_fresh_uids_by_default(phantom: Phantom, tmp_path: Path) -> None:
    a = pydicom.dcmread(write_ct_series(phantom, tmp_path / "a")[0])
    b = pydicom.dcmread(write_ct_series(phantom, tmp_path / "b")[0])
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.SeriesInstanceUID != b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), OBLIQUE], ids=["axial", "oblique"])
def test_simpleitk_reads_back_the_phantom(
    phantom: Phantom, tmp_path: Path, orientation: tuple[float, ...]
) -> None:
    origin = (3.0, -7.0, 40.0)
    paths = write_ct_series(
        phantom, tmp_path, orientation=orientation, origin=origin, shuffle_names=True, seed=5
    )
    # Shuffled names: the file name order says nothing about the slice order.
    assert sorted(paths) != paths
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), phantom.image)
    np.testing.assert_allclose(image.GetSpacing(), phantom.spacing, atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-6)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], orientation[:3], atol=1e-6)
    np.testing.assert_allclose(direction[:, 1], orientation[3:], atol=1e-6)
    np.testing.assert_allclose(direction[:, 2], _normal(orientation), atol=1e-6)


def test_signed_storage_when_values_go_negative(phantom: Phantom, tmp_path: Path) -> None:
    paths = write_ct_series(phantom, tmp_path, rescale=(1.0, 0.0))
    ds = pydicom.dcmread(paths[0])
    assert ds.PixelRepresentation == 1 and float(ds.RescaleIntercept) == 0.0
    np.testing.assert_array_equal(_hu(ds), phantom.image[0])


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGLSLossless,
        JPEG2000Lossless,
    ],
)
@pytest.mark.parametrize("enhanced", [False, True], ids=["single", "enhanced"])
def test_transfer_syntaxes_round_trip(phantom: Phantom, tmp_path: Path, syntax: str, enhanced: bool) -> None:
    paths = write_ct_series(phantom, tmp_path, transfer_syntax=syntax, enhanced=enhanced)
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == syntax
    if enhanced:
        pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        hu = np.asarray(ds.pixel_array, dtype=np.float64) * float(pvt.RescaleSlope) + float(
            pvt.RescaleIntercept
        )
        np.testing.assert_array_equal(hu, phantom.image)
    else:
        np.testing.assert_array_equal(_hu(ds), phantom.image[0])


def test_enhanced_file_geometry(phantom: Phantom, tmp_path: Path) -> None:
    origin = (1.0, 2.0, 3.0)
    (path,) = write_ct_series(phantom, tmp_path, enhanced=True, orientation=OBLIQUE, origin=origin)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.EnhancedCTImageStorage
    assert ds.NumberOfFrames == phantom.image.shape[0]
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient], OBLIQUE, atol=1e-9
    )
    sx, sy, sz = phantom.spacing
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [sy, sx]
    normal = _normal(OBLIQUE)
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(ipp, np.asarray(origin) + k * sz * normal, atol=1e-6)
        assert list(frame.FrameContentSequence[0].DimensionIndexValues) == [1, k + 1]


@pytest.mark.parametrize(
    ("enhanced", "orientation", "syntax"),
    [
        (False, (1, 0, 0, 0, 1, 0), ExplicitVRLittleEndian),
        (False, OBLIQUE, JPEGLSLossless),
        (True, (1, 0, 0, 0, 1, 0), ExplicitVRLittleEndian),
        (True, OBLIQUE, RLELossless),
    ],
    ids=["slice", "slice-oblique-jpegls", "enhanced", "enhanced-oblique-rle"],
)
def test_dciodvfy_reports_no_errors(
    phantom: Phantom, tmp_path: Path, enhanced: bool, orientation: tuple[float, ...], syntax: str
) -> None:
    paths = write_ct_series(
        phantom, tmp_path, enhanced=enhanced, orientation=orientation, transfer_syntax=syntax
    )
    report = dciodvfy(paths[len(paths) // 2])
    expected = "EnhancedCTImage" if enhanced else "CTImage"
    assert expected in report.output
    assert report.errors == [], report.output
    assert report.warnings == [], report.output


@pytest.mark.dcmtk
def test_jpeg_lossless_sv1_made_with_dcmcjpeg(phantom: Phantom, tmp_path: Path) -> None:
    (source,) = write_ct_series(phantom.image[:1], tmp_path / "in", spacing=phantom.spacing)
    target = tmp_path / "sv1.dcm"
    subprocess.run(
        [dcmtk("dcmcjpeg"), "+e1", str(source), str(target)], check=True, env=peer_env(), timeout=60
    )
    ds = pydicom.dcmread(target)
    assert ds.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    np.testing.assert_array_equal(_hu(ds), phantom.image[0])


def test_write_rejects_bad_arguments(phantom: Phantom, tmp_path: Path) -> None:
    with pytest.raises(PhantomError, match="dcmcjpeg"):
        write_ct_series(phantom, tmp_path, transfer_syntax=JPEGLosslessSV1)
    with pytest.raises(PhantomError, match="orthonormal"):
        write_ct_series(phantom, tmp_path, orientation=(1, 0, 0, 1, 0, 0))
    with pytest.raises(PhantomError, match="spacing"):
        write_ct_series(phantom.image, tmp_path)
    with pytest.raises(PhantomError, match="16-bit"):
        write_ct_series(phantom, tmp_path, rescale=(0.01, 0.0))
    assert not any(tmp_path.iterdir())
