"""load_series on enhanced multi-frame input: one file, many frames, geometry and rescale from the
functional groups (shared or per frame), frames out of order, localizer frames, and the refusals."""

from __future__ import annotations

import random
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.demo.phantom import Phantom
from inference.series import load_series
from tests.support.dicom_series import edit_files, shuffle_frames
from tests.support.series_checks import (
    OBLIQUE,
    ORIGIN,
    SPACING,
    assert_same_geometry,
    error_of,
    hu,
    new_instance,
    series_phantom,
    write,
)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return series_phantom()


def test_enhanced_ct_matches_the_single_frame_series(phantom: Phantom, tmp_path: Path) -> None:
    single = load_series(write(phantom, tmp_path / "single", orientation=OBLIQUE))
    [path] = write(phantom, tmp_path / "enhanced", orientation=OBLIQUE, enhanced=True)
    result = load_series([path])
    assert result.is_multiframe
    assert result.frame_order == list(range(12))
    assert len(result.headers) == 1 and "PixelData" not in result.headers[0]
    assert result.sop_instance_uids == [result.headers[0].SOPInstanceUID] * 12
    assert result.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2.1"
    np.testing.assert_array_equal(result.volume.array, single.volume.array)
    assert_same_geometry(result, single)


def test_enhanced_frames_out_of_order_with_per_frame_rescale(phantom: Phantom, tmp_path: Path) -> None:
    [path] = write(phantom, tmp_path / "enhanced", enhanced=True)
    order = list(range(12))
    random.Random(3).shuffle(order)  # frame i holds slice order[i]
    rescales = [((1.0, -1024.0), (0.5, -1024.0), (1.0, -1500.0))[i % 3] for i in range(12)]
    shuffle_frames(path, order, rescales)
    result = load_series([path])
    assert result.frame_order == [order.index(k) for k in range(12)]
    np.testing.assert_array_equal(result.volume.array, hu(phantom))
    assert result.volume.geometry.origin == pytest.approx(ORIGIN)
    assert result.volume.geometry.spacing == pytest.approx(SPACING)


def test_legacy_converted_enhanced_ct_from_highdicom(phantom: Phantom, tmp_path: Path) -> None:
    paths = write(phantom, tmp_path / "single", orientation=OBLIQUE)
    single = load_series(paths)
    legacy = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(p) for p in reversed(paths)],
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    out = tmp_path / "legacy.dcm"
    legacy.save_as(out)
    result = load_series([out])
    assert result.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2.2"
    np.testing.assert_array_equal(result.volume.array, single.volume.array)
    assert_same_geometry(result, single)


def test_several_multiframe_files_are_refused(phantom: Phantom, tmp_path: Path) -> None:
    [a] = write(phantom, tmp_path / "a", enhanced=True, series_uid="1.2.3.4")
    [b] = write(phantom, tmp_path / "b", enhanced=True, series_uid="1.2.3.4")
    edit_files([b], lambda ds, _: new_instance(ds))
    message = error_of([a, b])
    assert "2 multi-frame file(s)" in message and "only one enhanced multi-frame file" in message


def test_enhanced_frame_without_position_is_named(phantom: Phantom, tmp_path: Path) -> None:
    [path] = write(phantom, tmp_path / "e", enhanced=True)
    edit_files([path], lambda ds, _: delattr(ds.PerFrameFunctionalGroupsSequence[2], "PlanePositionSequence"))
    message = error_of([path])
    assert "ImagePositionPatient missing" in message and "frame 3 of enhanced_ct.dcm" in message


def test_enhanced_per_frame_geometry_groups(phantom: Phantom, tmp_path: Path) -> None:
    """Orientation and pixel measures given per frame instead of shared give the same volume."""
    [shared_file] = write(phantom, tmp_path / "shared", orientation=OBLIQUE, enhanced=True)
    reference = load_series([shared_file])

    def per_frame(ds: Dataset, _: int) -> None:
        shared = ds.SharedFunctionalGroupsSequence[0]
        for frame in ds.PerFrameFunctionalGroupsSequence:
            frame.PlaneOrientationSequence = shared.PlaneOrientationSequence
            frame.PixelMeasuresSequence = shared.PixelMeasuresSequence
        del shared.PlaneOrientationSequence
        del shared.PixelMeasuresSequence

    [path] = edit_files(write(phantom, tmp_path / "per-frame", orientation=OBLIQUE, enhanced=True), per_frame)
    assert "PlaneOrientationSequence" not in pydicom.dcmread(path).SharedFunctionalGroupsSequence[0]
    result = load_series([path])
    np.testing.assert_array_equal(result.volume.array, reference.volume.array)
    assert_same_geometry(result, reference)


def test_enhanced_localizer_frame_is_dropped(phantom: Phantom, tmp_path: Path) -> None:
    [path] = write(phantom, tmp_path / "e", enhanced=True)

    def mark_last_frame(ds: Dataset, _: int) -> None:
        frame_type = Dataset()
        frame_type.FrameType = ["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"]
        last = ds.PerFrameFunctionalGroupsSequence[-1]
        last.CTImageFrameTypeSequence = [frame_type]
        last.PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, 500.0]  # off the stack

    edit_files([path], mark_last_frame)
    result = load_series([path])
    assert result.frame_order == list(range(11))
    np.testing.assert_array_equal(result.volume.array, hu(phantom)[:11])
    [warning] = result.warnings
    assert "dropped 1 localizer image(s)" in warning and "frame 12 of enhanced_ct.dcm" in warning
