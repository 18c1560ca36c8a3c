"""RTSTRUCT writing: phantom label maps over real CT series (axial, oblique, enhanced multi-frame),
checked with dciodvfy and rasterised back onto the source grid."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.demo.phantom import Phantom, make_phantom, write_ct_series
from inference.rtstruct import build_rtstruct, rasterise, slice_contours
from inference.seg import write_seg
from inference.series import SourceSeries, load_series
from inference.spec import ResolvedModel
from tests.inference.test_seg import OBLIQUE, load_model
from tests.support.tools import dciodvfy

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rtstruct")


@pytest.fixture(scope="module")
def model(root: Path) -> ResolvedModel:
    return load_model(root)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom((10, 40, 48), spacing=(6.0, 6.0, 8.0), seed=3)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def check(path: Path) -> pydicom.Dataset:
    report = dciodvfy(path)
    assert report.errors == [], report.output
    return pydicom.dcmread(path)


@pytest.mark.parametrize("kind", ["axial", "oblique", "enhanced"])
def test_rtstruct_is_valid_and_rasterises_back_to_the_label_map(
    root: Path, model: ResolvedModel, phantom: Phantom, kind: str
) -> None:
    options: dict[str, object] = {
        "axial": {},
        "oblique": {"orientation": OBLIQUE, "origin": (-120.0, -90.5, 33.0)},
        "enhanced": {"enhanced": True, "orientation": OBLIQUE},
    }[kind]
    source: SourceSeries = load_series(write_ct_series(phantom, root / kind, **options))
    geometry = source.volume.geometry
    ds = build_rtstruct(
        phantom.labels, geometry, source.headers, model, frame_order=source.frame_order, content_datetime=WHEN
    )
    written = check(write_seg(ds, root / "out" / f"{kind}.dcm"))
    assert [int(r.ROINumber) for r in written.StructureSetROISequence] == [1, 2, 3]
    assert [str(r.ROIName) for r in written.StructureSetROISequence] == ["body", "liver", "kidney"]
    back = rasterise(written, geometry)
    for value in (1, 2, 3):
        assert dice(back == value, phantom.labels == value) > 0.95, value
    # each contour references the source image it lies on
    referenced = {
        str(i.ReferencedSOPInstanceUID)
        for roi in written.ROIContourSequence
        for c in roi.ContourSequence
        for i in c.ContourImageSequence
    }
    assert referenced <= set(source.sop_instance_uids)
    assert (
        written.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
        == source.headers[0].FrameOfReferenceUID
    )
    # same input, same UIDs
    again = build_rtstruct(phantom.labels, geometry, source.headers, model, frame_order=source.frame_order)
    assert again.SOPInstanceUID == ds.SOPInstanceUID and again.SeriesInstanceUID == ds.SeriesInstanceUID


def test_a_hole_is_a_contour_inside_a_contour() -> None:
    ring = np.zeros((12, 12), dtype=bool)
    ring[2:10, 2:10] = True
    ring[5:7, 5:7] = False
    assert len(slice_contours(ring)) == 2


def test_absent_label_has_an_roi_without_contours(root: Path, model: ResolvedModel, phantom: Phantom) -> None:
    source = load_series(write_ct_series(phantom, root / "absent"))
    labels = np.where(phantom.labels == 3, 0, phantom.labels).astype(np.uint8)
    ds = build_rtstruct(labels, source.volume.geometry, source.headers, model)
    written = check(write_seg(ds, root / "out" / "absent.dcm"))
    kidney = next(r for r in written.ROIContourSequence if int(r.ReferencedROINumber) == 3)
    assert "ContourSequence" not in kidney
