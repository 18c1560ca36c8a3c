"""b-values from the standard attribute and the vendors' private tags, and a DWI series holding
b=0 and b=800 images segmented with ``bvalue_for_filtering: 800`` (real predictor, random weights)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.demo.phantom import make_phantom, write_ct_series
from inference.bvalues import b_value
from inference.errors import SeriesError
from inference.executor import InferenceRequest, InProcessExecutor
from tests.support.random_model import write_random_spec
from tests.support.seg_read import seg_labels_on_grid


def private(group: int, creator: str, offset: int, vr: str, value: object) -> Dataset:
    ds = Dataset()
    ds.add_new((group << 16) | 0x0011, "LO", creator)
    ds.add_new((group << 16) | 0x1100 | offset, vr, value)
    return ds


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        (Dataset(), None),
        (private(0x0043, "GEMS_PARM_01", 0x39, "IS", ["1000000800", "8", "0", "0"]), 800.0),
        (private(0x0043, "GEMS_PARM_01", 0x39, "UN", b"500\\8\\0\\0 "), 500.0),
        (private(0x0019, "SIEMENS MR HEADER", 0x0C, "IS", "1400"), 1400.0),
        (private(0x2001, "Philips Imaging DD 001", 0x03, "UN", struct.pack("<f", 1000.0)), 1000.0),
        (private(0x2001, "Philips Imaging DD 001", 0x03, "FL", 50.0), 50.0),
        (private(0x0019, "SOMEONE ELSE", 0x0C, "IS", "1400"), None),  # another creator's element
    ],
)
def test_b_value_sources(ds: Dataset, expected: float | None) -> None:
    assert b_value(ds) == expected
    ds.DiffusionBValue = 3.0
    assert b_value(ds) == 3.0  # the standard attribute first


def dwi_series(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """One series, each position imaged at b=0 and b=800 (different images); returns the files and
    the two volumes."""
    phantom = make_phantom(shape=(12, 32, 32), seed=4)
    b0 = phantom.image
    b800 = np.rint(np.clip(phantom.image * 0.4 - 150.0, -1000, 2000))  # whole numbers: stored exactly
    study, series = generate_uid(), generate_uid()
    files = []
    for b, image in ((0.0, b0), (800.0, b800)):
        written = write_ct_series(
            image,
            folder / f"b{b:g}",
            spacing=phantom.spacing,
            study_uid=study,
            series_uid=series,
            modality="MR",
        )
        for path in written:
            ds = pydicom.dcmread(path)
            ds.DiffusionBValue = b
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(path)
        files += written
    return files, b0, b800


def test_dwi_series_keeps_the_closest_b_value(tmp_path: Path) -> None:
    spec = write_random_spec(tmp_path / "spec", {"dwi": {"seed": 9, "default_args": {"tile_step_size": 1.0}}})
    executor = InProcessExecutor(spec, device="cpu", num_threads=2)
    files, b0, b800 = dwi_series(tmp_path / "dwi")
    with pytest.raises(SeriesError):  # two images at each position without a choice
        executor.run(InferenceRequest(inputs=[files], models=["dwi"], output_dir=tmp_path / "none"))
    result = executor.run(
        InferenceRequest(
            inputs=[files], models=["dwi"], output_dir=tmp_path / "out", args={"bvalue_for_filtering": 700}
        )
    )
    assert any("b=800" in w for w in result.warnings)
    resolved = executor.catalog.resolve("dwi")

    def direct(image: np.ndarray) -> np.ndarray:
        prediction = executor.cache.predict(
            resolved.model_dir, [image.astype(np.float32)], (6.0, 6.0, 8.0), folds=(0,), tile_step_size=1.0
        )
        return prediction.labels

    from inference.series import load_series

    geometry = load_series(files[len(files) // 2 :]).volume.geometry
    expected = direct(b800)
    assert not np.array_equal(expected, direct(b0))  # the choice matters for this model
    np.testing.assert_array_equal(seg_labels_on_grid(result.outputs[0].path, geometry), expected)
