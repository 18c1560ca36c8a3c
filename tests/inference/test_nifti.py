"""NIfTI outputs: an independent reader (SimpleITK, which converts RAS back to LPS) sees our geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.errors import InferenceError
from inference.nifti import ras_affine, write_nifti
from inference.volume import Geometry


def oblique_geometry(shape: tuple[int, int, int]) -> Geometry:
    a, b = np.radians(20.0), np.radians(-15.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    m = rx @ ry
    return Geometry(
        spacing=(0.8, 0.9, 2.5),
        origin=(-120.5, 33.0, 410.25),
        direction=tuple(float(v) for v in m.ravel()),  # type: ignore[arg-type]
        shape=shape,
    )


def test_label_map_geometry_survives_an_independent_reader(tmp_path: Path) -> None:
    shape = (5, 6, 7)
    geometry = oblique_geometry(shape)
    labels = np.random.default_rng(0).integers(0, 4, shape, dtype=np.uint8)
    path = write_nifti(labels, geometry, tmp_path / "labels.nii.gz")
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), labels)
    np.testing.assert_allclose(image.GetSpacing(), geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), geometry.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), geometry.direction, atol=1e-5)
    # the affine maps voxel (x, y, z) to RAS: LPS of that voxel with x and y negated
    corner = np.array([6, 5, 4])
    lps = geometry.index_to_lps(corner[::-1][None, :])[0]
    ras = ras_affine(geometry) @ np.append(corner, 1.0)
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1])


def test_probabilities_are_a_4d_image(tmp_path: Path) -> None:
    shape = (3, 4, 5)
    probs = np.random.default_rng(1).random((2, *shape)).astype(np.float32)
    path = write_nifti(probs, oblique_geometry(shape), tmp_path / "proba.nii.gz")
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (5, 4, 3, 2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), probs)
    assert [p.name for p in tmp_path.iterdir()] == ["proba.nii.gz"]  # no temporary file left


def test_shape_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match="does not match grid"):
        write_nifti(np.zeros((2, 2, 2)), oblique_geometry((3, 3, 3)), tmp_path / "x.nii.gz")


def test_half_floats_are_written_as_float32(tmp_path: Path) -> None:
    shape = (2, 3, 4)
    probs = np.random.default_rng(2).random((2, *shape)).astype(np.float16)
    path = write_nifti(probs, oblique_geometry(shape), tmp_path / "half.nii.gz")
    read = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, probs.astype(np.float32))
