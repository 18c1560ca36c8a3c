"""Volume and Geometry follow SimpleITK's conventions: a round trip keeps voxels and geometry (also
oblique and left-handed), index_to_lps equals SimpleITK's TransformIndexToPhysicalPoint, and an array
that does not fit its geometry is refused."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from inference.volume import Geometry, Volume


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    a, b, c = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


DIRECTIONS = {
    "axial": np.eye(3),
    "oblique": rotation(20.0, -15.0, 35.0),
    "sagittal": np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "left-handed": np.diag([1.0, 1.0, -1.0]),  # slices stacked head to feet
}


def geometry(name: str, shape: tuple[int, int, int] = (4, 5, 6)) -> Geometry:
    return Geometry(
        spacing=(0.7, 0.9, 2.5),
        origin=(-120.5, 33.25, 410.0),
        direction=tuple(float(v) for v in DIRECTIONS[name].ravel()),  # type: ignore[arg-type]
        shape=shape,
    )


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.uint16, np.int16])
def test_round_trip_through_simpleitk(name: str, dtype: type) -> None:
    g = geometry(name)
    array: np.ndarray = (np.arange(np.prod(g.shape)) % 250).reshape(g.shape).astype(dtype)
    image = Volume(array, g).to_sitk()
    assert image.GetSize() == (6, 5, 4)  # SimpleITK sizes are (x, y, z)
    assert image.GetSpacing() == g.spacing and image.GetOrigin() == g.origin
    np.testing.assert_allclose(image.GetDirection(), g.direction, atol=1e-12)
    assert image.GetPixel(5, 0, 3) == array[3, 0, 5]  # (x, y, z) there is [z, y, x] here
    back = Volume.from_sitk(image)
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, array)
    assert back.geometry.shape == g.shape and back.geometry.spacing == g.spacing
    assert back.geometry.origin == g.origin
    np.testing.assert_allclose(back.geometry.direction, g.direction, atol=1e-12)


def test_from_sitk_reads_a_simpleitk_made_image() -> None:
    image = sitk.Image([7, 3, 2], sitk.sitkInt16)  # x=7, y=3, z=2
    image.SetSpacing((1.5, 2.0, 3.0))
    image.SetOrigin((1.0, -2.0, 3.0))
    image.SetDirection(tuple(float(v) for v in DIRECTIONS["oblique"].ravel()))
    image.SetPixel(6, 2, 1, 99)
    v = Volume.from_sitk(image)
    assert v.array.shape == v.geometry.shape == (2, 3, 7)
    assert v.array[1, 2, 6] == 99 and int(v.array.sum()) == 99
    assert v.geometry.spacing == (1.5, 2.0, 3.0) and v.geometry.origin == (1.0, -2.0, 3.0)
    assert all(isinstance(x, float) for x in (*v.geometry.spacing, *v.geometry.origin, *v.geometry.direction))
    assert all(isinstance(n, int) for n in v.geometry.shape)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_index_to_lps_matches_simpleitk(name: str) -> None:
    g = geometry(name)
    image = Volume(np.zeros(g.shape, np.float32), g).to_sitk()
    rng = np.random.default_rng(3)
    zyx = np.concatenate([rng.integers(0, 4, (20, 3)), [[0, 0, 0], [3, 4, 5]]])
    got = g.index_to_lps(zyx)
    assert got.shape == (22, 3)
    for (z, y, x), point in zip(zyx, got, strict=True):
        expected = image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
        np.testing.assert_allclose(point, expected, atol=1e-9)
    np.testing.assert_allclose(got[-2], g.origin)  # voxel [0, 0, 0] sits at the origin


def test_index_to_lps_steps_along_the_axes() -> None:
    g = geometry("sagittal")
    origin, x1, y1, z1 = g.index_to_lps(np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]))
    m = g.matrix()
    np.testing.assert_allclose(x1 - origin, 0.7 * m[:, 0])  # x: the first column, column spacing
    np.testing.assert_allclose(y1 - origin, 0.9 * m[:, 1])
    np.testing.assert_allclose(z1 - origin, 2.5 * m[:, 2])  # z: the slice normal, slice spacing
    np.testing.assert_allclose(m, DIRECTIONS["sagittal"])


def test_fractional_indices_interpolate_linearly() -> None:
    g = geometry("oblique")
    a, b, mid = g.index_to_lps(np.array([[0.0, 0.0, 0.0], [2.0, 4.0, 6.0], [1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(mid, (a + b) / 2)


@pytest.mark.parametrize("shape", [(4, 5, 7), (5, 4, 6), (4, 5), (1, 4, 5, 6)])
def test_array_not_fitting_its_geometry_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"array shape .* != geometry \(4, 5, 6\)"):
        Volume(np.zeros(shape, np.float32), geometry("axial"))


def test_with_array_keeps_the_geometry_and_checks_the_shape() -> None:
    g = geometry("oblique")
    image = Volume(np.zeros(g.shape, np.float32), g)
    labels = image.with_array(np.ones(g.shape, np.uint8))
    assert labels.geometry is g and labels.array.dtype == np.uint8
    with pytest.raises(ValueError, match="array shape"):
        image.with_array(np.ones((1, 1, 1), np.uint8))
