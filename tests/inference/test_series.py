"""load_series: sorting along the normal, geometry equal to SimpleITK's ImageSeriesReader (axial and
oblique), rescale, the select hook, read-once, and every refusal. Enhanced multi-frame input:
test_series_frames.py."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

import inference.series as series_module
from dicom_node.demo.phantom import Phantom, make_phantom
from inference.errors import SeriesError
from inference.series import SourceSeries, load_series
from tests.support.dicom_series import (
    edit_files,
    oblique_orientation,
    random_names,
    set_rescale,
)
from tests.support.series_checks import (
    AXIAL,
    OBLIQUE,
    ORIGIN,
    SPACING,
    error_of,
    hu,
    new_instance,
    series_phantom,
    write,
)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return series_phantom()


def sitk_volume(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_matches_sitk(result: SourceSeries, folder: Path) -> None:
    image = sitk_volume(folder)
    geometry = result.volume.geometry
    np.testing.assert_allclose(geometry.spacing, image.GetSpacing(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(geometry.origin, image.GetOrigin(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(geometry.direction, image.GetDirection(), rtol=0, atol=1e-6)
    expected = sitk.GetArrayFromImage(image).astype(np.float32)
    assert result.volume.array.shape == expected.shape
    np.testing.assert_array_equal(result.volume.array, expected)


# --- ordering and geometry -------------------------------------------------------------------------


def test_shuffled_files_are_sorted_along_the_normal_not_by_name_or_instance_number(
    phantom: Phantom, tmp_path: Path
) -> None:
    folder = tmp_path / "s"
    paths = write(phantom, folder)
    # instance numbers and file names say nothing about the order
    numbers = list(range(1, len(paths) + 1))
    random.Random(1).shuffle(numbers)
    edit_files(paths, lambda ds, k: setattr(ds, "InstanceNumber", numbers[k]))
    expected_uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    shuffled = random_names(paths)
    order = list(range(len(shuffled)))
    random.Random(2).shuffle(order)

    result = load_series([shuffled[i] for i in order])

    np.testing.assert_array_equal(result.volume.array, hu(phantom))
    assert result.volume.array.dtype == np.float32
    assert result.sop_instance_uids == expected_uids
    assert result.source_paths == shuffled
    assert [h.SOPInstanceUID for h in result.headers] == expected_uids
    assert result.volume.geometry.origin == pytest.approx(ORIGIN)
    assert result.volume.geometry.spacing == pytest.approx(SPACING)
    assert result.warnings == []
    assert_matches_sitk(result, folder)


@pytest.mark.parametrize(
    "orientation",
    [
        pytest.param(AXIAL, id="axial"),
        pytest.param(OBLIQUE, id="oblique-30x-30y"),
        pytest.param(oblique_orientation(-20, 50), id="oblique--20x-50y"),
        pytest.param((1.0, 0.0, 0.0, 0.0, 0.0, -1.0), id="coronal"),
        pytest.param((1.0, 0.0, 0.0, 0.0, -1.0, 0.0), id="normal-towards-feet"),
    ],
)
def test_geometry_and_voxels_match_simpleitk(phantom: Phantom, tmp_path: Path, orientation: Any) -> None:
    folder = tmp_path / "s"
    paths = write(phantom, folder, orientation=orientation, shuffle_names=True)
    result = load_series(list(reversed(paths)))
    assert_matches_sitk(result, folder)
    normal = np.cross(orientation[:3], orientation[3:])
    direction = np.asarray(result.volume.geometry.direction).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 2], normal, atol=1e-9)
    depths = [float(np.dot(h.ImagePositionPatient, normal)) for h in result.headers]
    assert depths == sorted(depths)


def test_spacing_comes_from_positions_and_pixel_spacing_order(phantom: Phantom, tmp_path: Path) -> None:
    # SliceThickness lies (slices overlap): z spacing must come from the positions.
    paths = write(phantom, tmp_path / "s", spacing=(0.6, 0.9, 3.0))
    edit_files(paths, lambda ds, k: setattr(ds, "SliceThickness", 5.0))
    result = load_series(paths)
    assert result.volume.geometry.spacing == pytest.approx((0.6, 0.9, 3.0))
    assert_matches_sitk(result, tmp_path / "s")


def test_per_slice_rescale_and_signed_pixels(phantom: Phantom, tmp_path: Path) -> None:
    signed = write(phantom, tmp_path / "signed", rescale=(1.0, 0.0))
    assert pydicom.dcmread(signed[0]).PixelRepresentation == 1
    np.testing.assert_array_equal(load_series(signed).volume.array, hu(phantom))

    paths = write(phantom, tmp_path / "varied")
    rescales = [(0.5, -1024.0), (1.0, -2000.0), (0.25, -1030.0)]
    edit_files(paths, lambda ds, k: set_rescale(ds, *rescales[k % 3]))
    assert {float(pydicom.dcmread(p).RescaleSlope) for p in paths} == {0.5, 1.0, 0.25}
    np.testing.assert_array_equal(load_series(paths).volume.array, hu(phantom))


def test_headers_keep_tags_but_lose_bulk_pixel_data(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")
    result = load_series(paths)
    for header in result.headers:
        assert "PixelData" not in header
        assert header.Rows == 40 and header.Columns == 36
        assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.study_uid == result.headers[0].StudyInstanceUID
    assert result.series_uid == result.headers[0].SeriesInstanceUID
    assert result.modality == "CT"
    assert result.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert result.frame_order is None and not result.is_multiframe


def test_each_file_is_read_once(phantom: Phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write(phantom, tmp_path / "s")
    calls: Counter[Path] = Counter()
    real = series_module.dcmread

    def counting(path: Path, *args: Any, **kwargs: Any) -> Dataset:
        calls[Path(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(series_module, "dcmread", counting)
    result = load_series(paths)
    assert calls == Counter({p: 1 for p in paths})
    np.testing.assert_array_equal(result.volume.array, hu(phantom))


# --- localizers and the select hook ----------------------------------------------------------------


def _add_localizer(template: Path, target: Path, *, image_type: bool, rows: int = 30) -> Path:
    ds = pydicom.dcmread(template)
    new_instance(ds)
    if image_type:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
    ds.Rows, ds.Columns = rows, 50
    ds.PixelData = np.zeros((rows, 50), dtype="<u2").tobytes()
    ds.InstanceNumber = 99
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.mark.parametrize("by_image_type", [True, False], ids=["ImageType-LOCALIZER", "other-orientation"])
def test_localizers_are_dropped_with_a_warning(phantom: Phantom, tmp_path: Path, by_image_type: bool) -> None:
    paths = write(phantom, tmp_path / "s")
    scout = _add_localizer(paths[0], tmp_path / "s" / "scout.dcm", image_type=by_image_type)
    result = load_series([scout, *paths])
    np.testing.assert_array_equal(result.volume.array, hu(phantom))
    assert scout not in result.source_paths
    [warning] = result.warnings
    assert "dropped 1" in warning and "scout.dcm" in warning
    assert ("LOCALIZER" in warning) == by_image_type


def test_only_localizers_is_an_error(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")
    scouts = [_add_localizer(paths[0], tmp_path / f"scout{i}.dcm", image_type=True) for i in range(2)]
    assert "all 2 images are localizers" in error_of(scouts)


def _stack_two_phases(phantom: Phantom, tmp_path: Path) -> list[Path]:
    """The same positions twice in one series, told apart by TemporalPositionIdentifier."""
    first = write(phantom, tmp_path / "p1", series_uid="1.2.826.0.1.5", study_uid="1.2.826.0.1.6")
    second = write(
        make_phantom(shape=(12, 40, 36), spacing=SPACING, seed=6),
        tmp_path / "p2",
        series_uid="1.2.826.0.1.5",
        study_uid="1.2.826.0.1.6",
    )
    edit_files(first, lambda ds, _: setattr(ds, "TemporalPositionIdentifier", 1))

    def second_phase(ds: Dataset, _: int) -> None:
        new_instance(ds)
        ds.TemporalPositionIdentifier = 2

    edit_files(second, second_phase)
    return first + second


def test_stacked_acquisitions_are_refused_naming_what_differs(phantom: Phantom, tmp_path: Path) -> None:
    message = error_of(_stack_two_phases(phantom, tmp_path))
    assert "2 images at each of 12 positions" in message
    assert "TemporalPositionIdentifier 1, 2" in message
    assert "select=" in message and "bvalue_for_filtering" in message


def test_select_hook_keeps_one_phase(phantom: Phantom, tmp_path: Path) -> None:
    paths = _stack_two_phases(phantom, tmp_path)
    result = load_series(paths, select=lambda ds: int(ds.TemporalPositionIdentifier) == 1)
    np.testing.assert_array_equal(result.volume.array, hu(phantom))
    assert all(p.parent.name == "p1" for p in result.source_paths)
    assert result.warnings == ["select= excluded 12 of 24 file(s)"]
    assert "select= excluded all" in error_of(paths, select=lambda ds: False)


def test_duplicate_file_of_one_instance_is_ignored_with_a_warning(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")
    copy = tmp_path / "copy.dcm"
    shutil.copy(paths[4], copy)
    result = load_series([*paths, copy])
    np.testing.assert_array_equal(result.volume.array, hu(phantom))
    assert len(result.warnings) == 1 and "copy.dcm" in result.warnings[0]


# --- refusals --------------------------------------------------------------------------------------


def test_files_of_two_series_are_refused_listing_both(phantom: Phantom, tmp_path: Path) -> None:
    a = write(phantom, tmp_path / "a", series_uid="1.2.826.0.1.1")
    b = write(phantom, tmp_path / "b", series_uid="1.2.826.0.1.2")
    message = error_of(a + b)
    assert "files of 2 series" in message
    assert "1.2.826.0.1.1 (12 file(s)" in message and "1.2.826.0.1.2 (12 file(s)" in message


def test_mixed_orientations_are_refused(phantom: Phantom, tmp_path: Path) -> None:
    a = write(phantom, tmp_path / "a", series_uid="1.2.826.0.1.3")
    b = write(phantom, tmp_path / "b", series_uid="1.2.826.0.1.3", orientation=OBLIQUE)
    edit_files(b, lambda ds, _: new_instance(ds))
    message = error_of(a[:6] + b[:6])
    assert "mixed ImageOrientationPatient (2 orientations" in message and "(6 images)" in message


def test_orientation_noise_within_tolerance_is_accepted(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")
    edit_files(paths[::2], lambda ds, _: setattr(ds, "ImageOrientationPatient", [1, 0.0002, 0, 0, 1, 0]))
    assert load_series(paths).volume.array.shape == (12, 40, 36)
    edit_files(paths[::2], lambda ds, _: setattr(ds, "ImageOrientationPatient", [1, 0.02, 0, 0, 1, 0]))
    assert "mixed ImageOrientationPatient" in error_of(paths)


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_names_the_instance(phantom: Phantom, tmp_path: Path, keyword: str) -> None:
    paths = write(phantom, tmp_path / "s")
    edit_files(paths[3:4], lambda ds, _: delattr(ds, keyword))
    message = error_of(paths)
    assert f"{keyword} missing or invalid in 1 of 12 images (instance 4 ({paths[3].name}))" in message


def test_duplicate_positions_name_both_instances(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")
    twin = tmp_path / "twin.dcm"

    def make_twin(ds: Dataset, _: int) -> None:
        new_instance(ds)
        ds.InstanceNumber = 50

    shutil.copy(paths[2], twin)
    edit_files([twin], make_twin)
    message = error_of([*paths, twin])
    assert "duplicate slice positions at 1 location(s)" in message
    assert "instance 3 (slice0002.dcm)" in message and "instance 50 (twin.dcm)" in message


def test_gap_is_refused_saying_where(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")
    message = error_of(paths[:5] + paths[6:])
    assert "slice spacing is not uniform (typical 2.500 mm" in message
    assert "5.000 mm between instance 5 (slice0004.dcm) and instance 7 (slice0006.dcm)" in message
    assert "about 1 missing slice(s)" in message


def test_spacing_tolerance_is_configurable(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")

    def nudge(ds: Dataset, _: int) -> None:
        ds.ImagePositionPatient = [
            ds.ImagePositionPatient[0],
            ds.ImagePositionPatient[1],
            110.0 + 5 * 2.5 + 0.2,
        ]

    edit_files(paths[5:6], nudge)  # one step 2.7 mm, the next 2.3 mm: 8 % off
    assert "not uniform" in error_of(paths)
    assert load_series(paths, spacing_tolerance=0.1).volume.array.shape[0] == 12


def test_gantry_tilt_is_refused(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")

    def tilt(ds: Dataset, k: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * k, z]  # sheared along y

    edit_files(paths, tilt)
    message = error_of(paths)
    assert "drift 5.50 mm within the image plane" in message and "(11.31 degrees off" in message
    assert "gantry tilt" in message


def test_tiny_drift_from_rounded_cosines_only_warns(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s", spacing=(0.8, 0.7, 10.0))

    def lean(ds: Dataset, k: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x + 0.015 * k, y, z]  # 0.09 degrees

    edit_files(paths, lean)
    result = load_series(paths)
    [warning] = result.warnings
    assert "drift 0.16 mm" in warning and "(0.09 degrees off" in warning and "ignored" in warning
    np.testing.assert_array_equal(result.volume.array, hu(phantom))


def test_mixed_sizes_are_refused(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")

    def shrink(ds: Dataset, _: int) -> None:
        ds.Rows = 20
        ds.PixelData = np.zeros((20, 36), dtype="<u2").tobytes()

    edit_files(paths[7:8], shrink)
    message = error_of(paths)
    assert "images differ in size (Rows x Columns)" in message
    assert "40x36 (11 images" in message and "20x36 (1 images, e.g. instance 8" in message


def test_mixed_pixel_spacing_is_refused(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")
    edit_files(paths[1:2], lambda ds, _: setattr(ds, "PixelSpacing", [0.9, 0.9]))
    assert "PixelSpacing differs between images" in error_of(paths)


def test_too_few_slices(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")
    assert "only 1 usable slice(s), at least 2 needed" in error_of(paths[:1])
    assert "only 3 usable slice(s), at least 4 needed" in error_of(paths[:3], min_slices=4)
    single = load_series(paths[:1], min_slices=1)
    assert single.volume.geometry.spacing == pytest.approx(SPACING)  # z from SliceThickness
    assert "single slice" in single.warnings[0]


def test_non_image_sop_class_is_refused(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s", series_uid="1.2.826.0.1.9")
    report = Dataset()
    report.SOPClassUID = BasicTextSRStorage
    report.SOPInstanceUID = generate_uid()
    report.SeriesInstanceUID = "1.2.826.0.1.9"
    report.Modality = "SR"
    report.file_meta = FileMetaDataset()
    report.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr = tmp_path / "report.dcm"
    report.save_as(sr, enforce_file_format=True)
    message = error_of([*paths, sr])
    assert "report.dcm: not an image for segmentation (SOP class Basic Text SR Storage" in message


def test_mixed_sop_classes_are_refused(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "s")

    def secondary_capture(ds: Dataset, _: int) -> None:
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage

    edit_files(paths[:1], secondary_capture)
    message = error_of(paths)
    assert "files of 2 SOP classes given" in message
    assert (
        "Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7) (1 file(s), e.g. slice0000.dcm)"
        in message
    )
    assert "CT Image Storage (1.2.840.10008.5.1.4.1.1.2) (11 file(s)" in message


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"not a dicom file at all"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:700]), id="truncated-header"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-1000]), id="truncated-pixels"),
    ],
)
def test_unreadable_file_is_named(phantom: Phantom, tmp_path: Path, damage: Callable[[Path], Any]) -> None:
    paths = write(phantom, tmp_path / "s")
    damage(paths[5])
    message = error_of(paths)
    assert str(paths[5]) in message


def test_no_files(tmp_path: Path) -> None:
    assert "no DICOM files given" in error_of([])


def test_a_deflate_bomb_in_a_series_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """Series loading never lets pydicom inflate a deflated file whole beyond the limit."""
    import tracemalloc

    from inference.inflate_guard import check_inflated_size
    from tests.support.deflate_bomb import write_deflate_bomb

    files = _bomb_source(tmp_path)
    bomb = write_deflate_bomb(files[0], tmp_path / "bomb.dcm", 64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(SeriesError, match="inflates to more than"):
            check_inflated_size(bomb, limit=32 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    check_inflated_size(bomb, limit=128 << 20)  # within the limit: allowed
    files[0].unlink()
    with pytest.raises(SeriesError, match="inflates to more than"):
        load_series([bomb, *files[1:]], max_inflated_bytes=32 << 20)


def _bomb_source(tmp_path: Path) -> list[Path]:
    from dicom_node.demo.phantom import write_ct_series

    return write_ct_series(make_phantom(shape=(4, 16, 16), seed=3), tmp_path / "ct")
