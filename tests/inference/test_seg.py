"""DICOM SEG writing: phantom label maps over real CT series (single-frame, oblique, enhanced), read
back with highdicom, checked with dciodvfy; determinism of UIDs; empty results; configured fields."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from dicom_node.demo.phantom import LABEL_NAMES, Phantom, make_phantom, write_ct_series
from inference.errors import SegWriteError
from inference.seg import build_seg, seg_uids, write_seg
from inference.series import SourceSeries, load_series
from inference.spec import ResolvedModel, load_model_spec
from tests.support.dicom_series import oblique_orientation
from tests.support.fake_model import make_model_folder, write_spec
from tests.support.seg_read import read_seg_labelmap, seg_labels_on_grid
from tests.support.tools import dciodvfy

OBLIQUE = oblique_orientation(10.0, 15.0)
FIXED_TIME = dt.datetime(2026, 1, 2, 3, 4, 5)


def load_model(
    root: Path, metadata: dict[str, Any] | None = None, model_id: str = "phantom"
) -> ResolvedModel:
    folder = root / "models" / "Dataset900_Phantom" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    if not folder.exists():
        make_model_folder(folder, labels=[LABEL_NAMES[i] for i in range(4)], size=1000)
    entry: dict[str, Any] = {"id": model_id, "rel_path": "Dataset900", "name": "Phantom organs"}
    if metadata:
        entry["metadata"] = metadata
    spec = write_spec(root / f"spec-{model_id}.yaml", {"model_folder": "models", "models": [entry]})
    return load_model_spec(spec, environ={}).resolve(model_id)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("seg")


@pytest.fixture(scope="module")
def model(root: Path) -> ResolvedModel:
    return load_model(root)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom((10, 40, 48), spacing=(6.0, 6.0, 8.0), seed=3)


def series(root: Path, phantom: Phantom, name: str, **options: Any) -> SourceSeries:
    return load_series(write_ct_series(phantom, root / name, **options))


@pytest.fixture(scope="module")
def axial(root: Path, phantom: Phantom) -> SourceSeries:
    return series(root, phantom, "axial")


def check_written(path: Path) -> Dataset:
    report = dciodvfy(path)
    assert report.errors == [], report.output
    assert report.warnings == [], report.output
    return pydicom.dcmread(path)


def check_positions(ds: Dataset, source: SourceSeries) -> None:
    """Every frame lies at the position of the source slice it references (independent of highdicom's
    reader: by the frame's own Image Position (Patient))."""
    positions: dict[tuple[str, int], np.ndarray] = {}
    for k, uid in enumerate(source.sop_instance_uids):
        frame = source.frame_order[k] + 1 if source.frame_order is not None else 0
        positions[(uid, frame)] = source.volume.geometry.index_to_lps(np.array([[k, 0, 0]]))[0]
    for group in ds.PerFrameFunctionalGroupsSequence:
        ref = group.DerivationImageSequence[0].SourceImageSequence[0]
        frame = int(ref.get("ReferencedFrameNumber", 0))
        expected = positions[(str(ref.ReferencedSOPInstanceUID), frame)]
        actual = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(actual, expected, atol=1e-3)


def test_round_trip_single_frame(
    root: Path, model: ResolvedModel, phantom: Phantom, axial: SourceSeries
) -> None:
    seg = build_seg(phantom.labels, axial.headers, model)
    assert seg is not None
    ds = check_written(write_seg(seg, root / "out" / "axial.dcm"))
    assert np.array_equal(read_seg_labelmap(root / "out" / "axial.dcm", axial.headers), phantom.labels)
    assert np.array_equal(
        seg_labels_on_grid(root / "out" / "axial.dcm", axial.volume.geometry), phantom.labels
    )
    check_positions(ds, axial)
    # segment number = label value; every model label described
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [1, 2, 3]
    assert [str(s.SegmentLabel) for s in ds.SegmentSequence] == ["body", "liver", "kidney"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in ds.SegmentSequence] == [
        "38266002",
        "10200004",
        "64033007",
    ]
    # empty frames omitted: one frame per (slice, label) with voxels
    expected_frames = sum(int(np.any(phantom.labels[k] == v)) for k in range(10) for v in (1, 2, 3))
    assert int(ds.NumberOfFrames) == expected_frames < 30
    # every source instance referenced
    referenced = {
        str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == set(axial.sop_instance_uids)
    assert (
        ds.StudyInstanceUID == axial.study_uid
        and ds.FrameOfReferenceUID == axial.headers[0].FrameOfReferenceUID
    )
    # configured / default series fields, no placeholders
    assert ds.SeriesDescription == "Phantom organs segmentation"
    assert int(ds.SeriesNumber) == int(axial.headers[0].SeriesNumber) + 1000
    assert ds.Manufacturer == "nnunet-dicom-node" and ds.ManufacturerModelName == "nnU-Net"
    assert ds.DeviceSerialNumber == model.version
    assert ds.SoftwareVersions.startswith("nnunet-dicom-node ")
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "nnU-Net" and algorithm.AlgorithmVersion == model.algorithm.version


def test_same_input_same_uids_other_version_other_uids(
    root: Path, model: ResolvedModel, phantom: Phantom, axial: SourceSeries
) -> None:
    first = build_seg(phantom.labels, axial.headers, model, content_datetime=FIXED_TIME)
    again = build_seg(phantom.labels, axial.headers, model, content_datetime=FIXED_TIME)
    assert first is not None and again is not None
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (again.SeriesInstanceUID, again.SOPInstanceUID)
    assert (str(first.SeriesInstanceUID), str(first.SOPInstanceUID)) == seg_uids(axial.series_uid, model)
    a = write_seg(first, root / "out" / "det-a.dcm").read_bytes()
    b = write_seg(again, root / "out" / "det-b.dcm").read_bytes()
    assert a == b  # byte-identical with a fixed content time
    later = build_seg(phantom.labels, axial.headers, model)
    assert later is not None and later.SOPInstanceUID == first.SOPInstanceUID  # time differs, UIDs do not

    retrained = replace(model, version="2.0+abcdef012345")
    other = build_seg(phantom.labels, axial.headers, retrained)
    assert other is not None
    assert other.SeriesInstanceUID != first.SeriesInstanceUID and other.SOPInstanceUID != first.SOPInstanceUID
    variant = build_seg(phantom.labels, axial.headers, model, uid_variant="folds=0,1")
    assert variant is not None and variant.SOPInstanceUID != first.SOPInstanceUID
    assert first.SOPInstanceUID != first.SeriesInstanceUID


def test_empty_mask(root: Path, model: ResolvedModel, axial: SourceSeries) -> None:
    empty = np.zeros((10, 40, 48), dtype=np.uint8)
    assert build_seg(empty, axial.headers, model, empty_result="skip") is None
    seg = build_seg(empty, axial.headers, model, empty_result="empty_seg")
    assert seg is not None
    path = write_seg(seg, root / "out" / "empty.dcm")
    ds = check_written(path)
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [1, 2, 3]
    assert int(ds.NumberOfFrames) == 3  # one empty frame per segment, not 10 x 3
    assert not np.any(ds.pixel_array)
    referenced = {
        str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == set(axial.sop_instance_uids)
    assert not read_seg_labelmap(path, axial.headers).any()


def test_absent_label_is_described_without_frames(
    root: Path, model: ResolvedModel, phantom: Phantom, axial: SourceSeries
) -> None:
    labels = phantom.labels.copy()
    labels[labels == 3] = 1
    seg = build_seg(labels, axial.headers, model)
    assert seg is not None
    ds = check_written(write_seg(seg, root / "out" / "no-kidney.dcm"))
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [1, 2, 3]
    used = {
        int(g.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for g in ds.PerFrameFunctionalGroupsSequence
    }
    assert used == {1, 2}
    assert np.array_equal(read_seg_labelmap(root / "out" / "no-kidney.dcm", axial.headers), labels)


def test_oblique_source(root: Path, model: ResolvedModel, phantom: Phantom) -> None:
    oblique = series(root, phantom, "oblique", orientation=OBLIQUE, origin=(-120.0, -90.5, 33.0))
    seg = build_seg(phantom.labels, oblique.headers, model)
    assert seg is not None
    path = write_seg(seg, root / "out" / "oblique.dcm")
    ds = check_written(path)
    np.testing.assert_allclose(
        ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient,
        OBLIQUE,
        atol=1e-6,
    )
    check_positions(ds, oblique)
    assert np.array_equal(read_seg_labelmap(path, oblique.headers), phantom.labels)
    assert np.array_equal(seg_labels_on_grid(path, oblique.volume.geometry), phantom.labels)


def test_enhanced_multiframe_source(root: Path, model: ResolvedModel, phantom: Phantom) -> None:
    enhanced = series(root, phantom, "enhanced", enhanced=True, orientation=OBLIQUE)
    assert len(enhanced.headers) == 1 and enhanced.frame_order is not None
    seg = build_seg(phantom.labels, enhanced.headers, model, frame_order=enhanced.frame_order)
    assert seg is not None
    path = write_seg(seg, root / "out" / "enhanced.dcm")
    ds = check_written(path)
    check_positions(ds, enhanced)
    assert np.array_equal(read_seg_labelmap(path, enhanced.headers, enhanced.frame_order), phantom.labels)
    assert np.array_equal(seg_labels_on_grid(path, enhanced.volume.geometry), phantom.labels)


def test_enhanced_source_with_frames_out_of_order(root: Path, model: ResolvedModel, phantom: Phantom) -> None:
    """Frames stored top-down: label slice k is frame n-1-k."""
    enhanced = series(root, phantom, "enhanced-reversed", enhanced=True)
    header = enhanced.headers[0].copy()
    header.PerFrameFunctionalGroupsSequence = list(reversed(header.PerFrameFunctionalGroupsSequence))
    order = list(range(9, -1, -1))
    source = replace(enhanced, headers=[header], frame_order=order)
    seg = build_seg(phantom.labels, [header], model, frame_order=order)
    assert seg is not None
    path = write_seg(seg, root / "out" / "enhanced-reversed.dcm")
    ds = check_written(path)
    check_positions(ds, source)
    assert np.array_equal(read_seg_labelmap(path, [header], order), phantom.labels)


def test_empty_seg_over_enhanced_source(root: Path, model: ResolvedModel, phantom: Phantom) -> None:
    enhanced = series(root, phantom, "enhanced-empty", enhanced=True)
    seg = build_seg(np.zeros_like(phantom.labels), enhanced.headers, model, frame_order=enhanced.frame_order)
    assert seg is not None
    path = write_seg(seg, root / "out" / "enhanced-empty.dcm")
    assert int(check_written(path).NumberOfFrames) == 3
    assert not read_seg_labelmap(path, enhanced.headers, enhanced.frame_order).any()


def test_configured_fields_codes_and_colours(root: Path, phantom: Phantom, axial: SourceSeries) -> None:
    metadata = {
        "algorithm_name": "PhantomNet",
        "algorithm_version": "3.1",
        "series_description": "AI organs",
        "series_number": 4321,
        "manufacturer": "Example Hospital AI Lab",
        "manufacturer_model_name": "PhantomNet CT",
        "device_serial_number": "PN-0001",
        "body_part_examined": "CHEST",
        "content_creator_name": "Node^AI",
        "clinical_trial_series_id": "TRIAL-S1",
        "clinical_trial_time_point_id": "TP0",
        "segment_names": [
            {"name": "EntireBody", "color": [10, 200, 30], "tracking_id": "body"},
            {"name": "Liver", "description": "whole liver"},
            {"name": "left kidney", "label": "Left kidney"},
        ],
    }
    configured = load_model(root, metadata, model_id="configured")
    seg = build_seg(phantom.labels, axial.headers, configured)
    assert seg is not None
    ds = check_written(write_seg(seg, root / "out" / "configured.dcm"))
    assert (ds.SeriesDescription, int(ds.SeriesNumber)) == ("AI organs", 4321)
    assert (ds.Manufacturer, ds.ManufacturerModelName) == ("Example Hospital AI Lab", "PhantomNet CT")
    assert ds.DeviceSerialNumber == "PN-0001" and ds.BodyPartExamined == "CHEST"
    assert str(ds.ContentCreatorName) == "Node^AI"
    assert ds.ClinicalTrialSeriesID == "TRIAL-S1" and ds.ClinicalTrialTimePointID == "TP0"
    body, liver, kidney = ds.SegmentSequence
    assert body.TrackingID == "body" and body.TrackingUID.startswith("2.25.")
    assert liver.SegmentDescription == "whole liver"
    assert kidney.SegmentLabel == "Left kidney"
    assert (
        kidney.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeValue
        == "7771000"
    )
    assert body.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "3.1"
    from highdicom.color import CIELabColor

    assert CIELabColor.from_dicom_value(tuple(body.RecommendedDisplayCIELabValue)).to_rgb() == (10, 200, 30)
    # overrides at write time
    again = build_seg(phantom.labels, axial.headers, configured, series_description="Other", series_number=7)
    assert again is not None and (again.SeriesDescription, int(again.SeriesNumber)) == ("Other", 7)


def test_colours_are_deterministic_by_name(
    root: Path, model: ResolvedModel, phantom: Phantom, axial: SourceSeries
) -> None:
    other = load_model(root, {"segment_names": ["EntireBody", "Liver", "Kidney"]}, model_id="other")
    a = build_seg(phantom.labels, axial.headers, model)
    b = build_seg(phantom.labels, axial.headers, other)
    assert a is not None and b is not None
    colours_a = [tuple(s.RecommendedDisplayCIELabValue) for s in a.SegmentSequence]
    colours_b = [tuple(s.RecommendedDisplayCIELabValue) for s in b.SegmentSequence]
    assert colours_a[1] == colours_b[1]  # "liver" and "Liver": TotalSegmentator's liver colour
    assert len(set(colours_a)) == 3


def test_errors_name_the_model(model: ResolvedModel, phantom: Phantom, axial: SourceSeries) -> None:
    bad = phantom.labels.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(SegWriteError, match=r"model 'phantom'.*values 7"):
        build_seg(bad, axial.headers, model)
    with pytest.raises(SegWriteError, match=r"model 'phantom'.*9 source headers"):
        build_seg(phantom.labels, axial.headers[:9], model)
    with pytest.raises(SegWriteError, match=r"model 'phantom'.*40x48"):
        build_seg(phantom.labels[:, :, :40], axial.headers, model)
    with pytest.raises(SegWriteError, match="must be 3D"):
        build_seg(phantom.labels[0], axial.headers, model)
    with pytest.raises(SegWriteError, match="empty_result"):
        build_seg(phantom.labels, axial.headers, model, empty_result="none")  # type: ignore[arg-type]


def test_wider_integer_label_maps_are_accepted(
    model: ResolvedModel, phantom: Phantom, axial: SourceSeries
) -> None:
    seg = build_seg(phantom.labels.astype(np.int64), axial.headers, model)
    reference = build_seg(phantom.labels, axial.headers, model)
    assert seg is not None and reference is not None
    assert seg.PixelData == reference.PixelData


def test_write_is_atomic_and_replaces(
    root: Path, model: ResolvedModel, phantom: Phantom, axial: SourceSeries
) -> None:
    seg = build_seg(phantom.labels, axial.headers, model)
    assert seg is not None
    target = root / "atomic" / "seg.dcm"
    target.parent.mkdir()
    target.write_bytes(b"old")
    write_seg(seg, target)
    assert pydicom.dcmread(target).SOPInstanceUID == seg.SOPInstanceUID
    assert [p.name for p in target.parent.iterdir()] == ["seg.dcm"]  # no temp file left
