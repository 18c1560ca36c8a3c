"""FRACTIONAL (probability) SEG: valid under dciodvfy, probabilities read back within one step of
1/255, over single-frame and enhanced multi-frame sources."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from scipy.ndimage import gaussian_filter

from dicom_node.demo.phantom import Phantom, make_phantom, write_ct_series
from inference.errors import SegWriteError
from inference.seg import build_seg, write_seg
from inference.seg_fractional import build_fractional_seg
from inference.series import load_series
from inference.spec import ResolvedModel
from tests.inference.test_seg import load_model
from tests.support.tools import dciodvfy


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fractional")


@pytest.fixture(scope="module")
def model(root: Path) -> ResolvedModel:
    return load_model(root)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom((10, 40, 48), spacing=(6.0, 6.0, 8.0), seed=3)


def soft(labels: np.ndarray, classes: int = 4) -> np.ndarray:
    """Blurred one-hot maps normalised to sum 1: smooth probabilities with the label map as argmax."""
    one_hot = np.stack([gaussian_filter((labels == c).astype(np.float32), 1.0) for c in range(classes)])
    return (one_hot / one_hot.sum(axis=0, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("enhanced", [False, True])
def test_fractional_seg_is_valid_and_round_trips(
    root: Path, model: ResolvedModel, phantom: Phantom, enhanced: bool
) -> None:
    source = load_series(write_ct_series(phantom, root / f"src-{enhanced}", enhanced=enhanced))
    probabilities = soft(phantom.labels)
    ds = build_fractional_seg(probabilities, source.headers, model, frame_order=source.frame_order)
    path = write_seg(ds, root / "out" / f"proba-{enhanced}.dcm")
    report = dciodvfy(path)
    assert report.errors == [], report.output
    written = pydicom.dcmread(path)
    assert written.SegmentationType == "FRACTIONAL" and written.SegmentationFractionalType == "PROBABILITY"
    assert [int(s.SegmentNumber) for s in written.SegmentSequence] == [1, 2, 3]
    seg = hd.seg.segread(str(path))
    if enhanced:
        assert source.frame_order is not None
        back = seg.get_pixels_by_source_frame(
            str(source.headers[0].SOPInstanceUID),
            source_frame_numbers=[f + 1 for f in source.frame_order],
            rescale_fractional=True,
            assert_missing_frames_are_empty=True,
            dtype=np.float32,
        )
    else:
        back = seg.get_pixels_by_source_instance(
            source.sop_instance_uids,
            rescale_fractional=True,
            assert_missing_frames_are_empty=True,
            dtype=np.float32,
        )
    expected = np.moveaxis(probabilities[1:], 0, -1)
    assert back.shape == expected.shape
    assert np.abs(back - expected).max() <= 0.5 / 255 + 1e-6
    # its own UIDs: never the label SEG's
    labels_seg = build_seg(phantom.labels, source.headers, model, frame_order=source.frame_order)
    assert labels_seg is not None and labels_seg.SOPInstanceUID != ds.SOPInstanceUID
    assert labels_seg.SeriesInstanceUID != ds.SeriesInstanceUID


def test_channels_that_do_not_match_the_labels_are_refused(
    root: Path, model: ResolvedModel, phantom: Phantom
) -> None:
    source = load_series(write_ct_series(phantom, root / "src-bad"))
    with pytest.raises(SegWriteError, match="3 probability channels do not match labels"):
        build_fractional_seg(soft(phantom.labels, 3), source.headers, model)
