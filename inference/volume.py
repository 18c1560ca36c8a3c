"""A 3D image or label map with its patient-space geometry (SimpleITK conventions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in patient space (LPS, mm).

    spacing: (x, y, z) = (column spacing, row spacing, slice spacing)
    origin: (x, y, z) position of voxel [0, 0, 0]
    direction: row-major 3x3 whose columns are the x axis, y axis and slice normal
    shape: (z, y, x) array shape
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, float, float, float, float, float, float, float, float]
    shape: tuple[int, int, int]

    def matrix(self) -> np.ndarray:
        """The 3x3 direction matrix (columns are axes)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_lps(self, zyx: np.ndarray) -> np.ndarray:
        """Patient coordinates of voxel indices given as (N, 3) (z, y, x)."""
        xyz = np.asarray(zyx, dtype=np.float64)[:, ::-1]
        scaled = xyz * np.asarray(self.spacing)
        return np.asarray(self.origin) + scaled @ self.matrix().T


@dataclass(frozen=True)
class Volume:
    """``array`` is (z, y, x); ``geometry.shape == array.shape``."""

    array: np.ndarray
    geometry: Geometry

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != tuple(self.geometry.shape):
            raise ValueError(f"array shape {self.array.shape} != geometry {self.geometry.shape}")

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(self.geometry.spacing)
        image.SetOrigin(self.geometry.origin)
        image.SetDirection(self.geometry.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        array = sitk.GetArrayFromImage(image)
        geometry = Geometry(
            spacing=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in image.GetDirection()),  # type: ignore[arg-type]
            shape=tuple(int(v) for v in array.shape),  # type: ignore[arg-type]
        )
        return cls(array=array, geometry=geometry)

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, other voxels (e.g. a label map predicted from this image)."""
        return Volume(array=array, geometry=self.geometry)
