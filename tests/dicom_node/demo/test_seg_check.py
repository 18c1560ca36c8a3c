"""dicom_node.demo.seg_check: a SEG read back against its source series (references, label map, dciodvfy)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes

from dicom_node.demo.phantom import make_phantom, write_ct_series
from dicom_node.demo.seg_check import check_seg, dice_per_label, find_dciodvfy


def _write_seg(source_paths: list[Path], labels: np.ndarray, out: Path) -> Path:
    sources = [dcmread(p) for p in source_paths]
    descriptions = []
    for number, name in ((1, "body"), (2, "liver"), (3, "kidney")):
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(out)
    return out


@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray, Path]:
    root = tmp_path_factory.mktemp("segcheck")
    phantom = make_phantom(shape=(8, 24, 24), seed=3)
    paths = write_ct_series(phantom, root / "ct")
    seg = _write_seg(paths, phantom.labels, root / "seg.dcm")
    return paths, phantom.labels, seg


def test_a_valid_seg_passes_and_gives_back_the_label_map(phantom_series) -> None:
    paths, truth, seg_path = phantom_series
    result = check_seg(seg_path, paths, validate=find_dciodvfy() is not None)
    assert result.ok, result.problems
    assert result.segments == {1: "body", 2: "liver", 3: "kidney"}
    assert result.missing_references == []
    assert result.referenced_series_uids == [str(dcmread(paths[0]).SeriesInstanceUID)]
    np.testing.assert_array_equal(result.labels, truth)
    assert dice_per_label(result.labels, truth, [1, 2, 3]) == {1: 1.0, 2: 1.0, 3: 1.0}
    if result.dciodvfy is not None:
        assert result.dciodvfy.errors == []


def test_a_seg_of_another_series_is_reported(phantom_series, tmp_path: Path) -> None:
    _, _, seg_path = phantom_series
    other = write_ct_series(make_phantom(shape=(8, 24, 24), seed=4), tmp_path / "other")
    result = check_seg(seg_path, other, validate=False)
    assert not result.ok
    assert any("Referenced Series Sequence" in p for p in result.problems)
    assert result.missing_references == [str(dcmread(p).SOPInstanceUID) for p in other]
    assert not result.labels.any()


def test_missing_references_are_listed(phantom_series, tmp_path: Path) -> None:
    paths, truth, _ = phantom_series
    half = len(paths) // 2
    seg_path = _write_seg(paths[:half], truth[:half], tmp_path / "half.dcm")
    result = check_seg(seg_path, paths, validate=False)
    assert result.problems == [f"{len(paths) - half} of {len(paths)} source instances are not referenced"]
    assert result.missing_references == [str(dcmread(p).SOPInstanceUID) for p in paths[half:]]
    np.testing.assert_array_equal(result.labels[:half], truth[:half])
    assert not result.labels[half:].any()


def test_dice_per_label() -> None:
    truth = np.array([[0, 1, 1, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 0, 2]], dtype=np.uint8)
    scores = dice_per_label(pred, truth, [1, 2, 3])
    assert scores[1] == pytest.approx(2 / 3)
    assert scores[2] == 1.0
    assert scores[3] == 1.0  # absent from both
    with pytest.raises(ValueError, match="shape"):
        dice_per_label(pred[:, :2], truth, [1])
