"""The phantom series that the series-loading tests write, and the checks they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.demo.phantom import Phantom, make_phantom, write_ct_series
from inference.errors import SeriesError
from inference.series import SourceSeries, load_series
from tests.support.dicom_series import oblique_orientation

SPACING = (0.8, 0.7, 2.5)
ORIGIN = (-20.0, 15.0, 110.0)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
OBLIQUE = oblique_orientation(30, 30)


def series_phantom() -> Phantom:
    """12 slices of 40x36, anisotropic spacing."""
    return make_phantom(shape=(12, 40, 36), spacing=SPACING, seed=5)


def write(phantom: Phantom, folder: Path, **options: Any) -> list[Path]:
    options.setdefault("origin", ORIGIN)
    return write_ct_series(phantom, folder, **options)


def hu(phantom: Phantom) -> np.ndarray:
    return phantom.image.astype(np.float32)


def assert_same_geometry(a: SourceSeries, b: SourceSeries) -> None:
    ga, gb = a.volume.geometry, b.volume.geometry
    assert ga.shape == gb.shape
    np.testing.assert_allclose(ga.spacing, gb.spacing, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ga.origin, gb.origin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ga.direction, gb.direction, rtol=0, atol=1e-6)


def new_instance(ds: Dataset) -> None:
    """Give an edited copy its own SOP Instance UID (file meta too)."""
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def error_of(paths: list[Path], **options: Any) -> str:
    with pytest.raises(SeriesError) as info:
        load_series(paths, **options)
    return str(info.value)
