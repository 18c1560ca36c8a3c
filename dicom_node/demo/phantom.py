"""Synthetic abdominal CT phantoms with known label maps, for tests, the demo, benchmarks and the
training script of the demo model.

A phantom is an air-filled field of view holding a soft-tissue "body" (an elliptic cylinder whose
radius varies gently along z) with a large "liver" ellipsoid on the patient's right, a smaller
"kidney" ellipsoid on the patient's left and back, and a bright, unlabelled "spine" (a distractor
that belongs to the body label). Sizes, positions, rotations and intensities are drawn from a
seeded generator, so a seed always gives the same phantom. Sizes are fractions of the field of
view, so any shape and spacing gives a plausible phantom.

Conventions follow :mod:`inference.volume`: arrays are ``(z, y, x)``, spacing is ``(x, y, z)`` mm.
With the default orientation, +x is the patient's left and +y the patient's back (LPS).

Writing phantoms as DICOM lives in :mod:`dicom_node.demo.phantom_dicom`; :func:`write_ct_series` is
re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dicom_node.demo.phantom_dicom import write_ct_series
from inference.errors import PhantomError

__all__ = [
    "AIR_HU",
    "LABEL_NAMES",
    "Phantom",
    "make_phantom",
    "write_ct_series",
]

logger = logging.getLogger(__name__)

AIR_HU = -1000
#: Label value -> name, as in the demo model's dataset.json.
LABEL_NAMES: dict[int, str] = {0: "background", 1: "body", 2: "liver", 3: "kidney"}

# Intensity ranges (HU) from which each phantom draws its mean values.
_BODY_HU = (5.0, 35.0)
_LIVER_HU = (60.0, 80.0)
_KIDNEY_HU = (150.0, 200.0)
_BONE_HU = (450.0, 700.0)
_NOISE_SD_HU = 5.0


@dataclass(frozen=True)
class Phantom:
    """``image``: int16 HU ``(z, y, x)``; ``labels``: uint8 ``(z, y, x)`` with the values of
    :data:`LABEL_NAMES`; ``spacing``: ``(x, y, z)`` mm."""

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.image.shape
        return int(z), int(y), int(x)


def _ellipsoid(
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    centre: tuple[float, float, float],
    radii: tuple[float, float, float],
    angle: float,
) -> np.ndarray:
    """Boolean mask of an ellipsoid rotated by ``angle`` (radians) in the axial plane.
    ``coords``, ``centre`` and ``radii`` are (z, y, x) in mm."""
    z, y, x = coords
    dz, dy, dx = z - centre[0], y - centre[1], x - centre[2]
    cos, sin = np.cos(angle), np.sin(angle)
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    result: np.ndarray = (dz / radii[0]) ** 2 + (v / radii[1]) ** 2 + (u / radii[2]) ** 2 <= 1.0
    return result


def make_phantom(
    shape: Sequence[int] = (32, 64, 64),
    spacing: Sequence[float] = (6.0, 6.0, 8.0),
    seed: int = 0,
) -> Phantom:
    """A random but reproducible phantom of ``shape`` ``(z, y, x)`` voxels at ``spacing``
    ``(x, y, z)`` mm. The same arguments always give the same phantom."""
    if len(shape) != 3 or any(int(n) < 4 for n in shape):
        raise PhantomError(f"phantom shape must be 3 sizes (z, y, x) of at least 4 voxels, got {shape}")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise PhantomError(f"phantom spacing must be 3 positive sizes (x, y, z) in mm, got {spacing}")
    nz, ny, nx = (int(n) for n in shape)
    sx, sy, sz = (float(s) for s in spacing)
    rng = np.random.default_rng(seed)

    # Physical coordinates (mm) of voxel centres, relative to the centre of the field of view.
    ext_z, ext_y, ext_x = nz * sz, ny * sy, nx * sx
    z = ((np.arange(nz) + 0.5) * sz - ext_z / 2)[:, None, None]
    y = ((np.arange(ny) + 0.5) * sy - ext_y / 2)[None, :, None]
    x = ((np.arange(nx) + 0.5) * sx - ext_x / 2)[None, None, :]
    coords = (z, y, x)

    # Body: elliptic cylinder along z whose radius swells and narrows a little.
    cx, cy = rng.uniform(-0.04, 0.04) * ext_x, rng.uniform(-0.04, 0.04) * ext_y
    a, b = rng.uniform(0.34, 0.44) * ext_x, rng.uniform(0.27, 0.36) * ext_y
    swell = 1.0 + rng.uniform(0.02, 0.08) * np.sin(
        2 * np.pi * z / ext_z * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi)
    )
    body = ((x - cx) / (a * swell)) ** 2 + ((y - cy) / (b * swell)) ** 2 <= 1.0

    # Liver: large ellipsoid, patient's right (low x), front half.
    liver_centre = (
        rng.uniform(-0.12, 0.12) * ext_z,
        cy - rng.uniform(0.0, 0.2) * b,
        cx - rng.uniform(0.3, 0.45) * a,
    )
    liver_radii = (rng.uniform(0.22, 0.32) * ext_z, rng.uniform(0.45, 0.6) * b, rng.uniform(0.35, 0.5) * a)
    liver = _ellipsoid(coords, liver_centre, liver_radii, rng.uniform(-0.5, 0.5)) & body

    # Kidney: small ellipsoid, patient's left (high x) and back (high y), clear of spine and liver.
    kidney_centre = (
        rng.uniform(-0.12, 0.12) * ext_z,
        cy + rng.uniform(0.2, 0.35) * b,
        cx + rng.uniform(0.42, 0.55) * a,
    )
    kidney_radii = (rng.uniform(0.15, 0.22) * ext_z, rng.uniform(0.25, 0.35) * b, rng.uniform(0.16, 0.22) * a)
    kidney = _ellipsoid(coords, kidney_centre, kidney_radii, rng.uniform(-0.8, 0.8)) & body & ~liver

    # Spine: bright unlabelled cylinder in the back midline (part of the body label).
    spine_r = rng.uniform(0.13, 0.17) * min(a, b)
    spine = ((x - cx) ** 2 + (y - (cy + 0.68 * b)) ** 2 <= spine_r**2) & body & ~kidney & ~liver

    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    labels[np.broadcast_to(body, labels.shape)] = 1
    labels[liver] = 2
    labels[kidney] = 3

    image = np.full((nz, ny, nx), float(AIR_HU), dtype=np.float64)
    image[labels == 1] = rng.uniform(*_BODY_HU)
    image[labels == 2] = rng.uniform(*_LIVER_HU)
    image[labels == 3] = rng.uniform(*_KIDNEY_HU)
    image[np.broadcast_to(spine, image.shape)] = rng.uniform(*_BONE_HU)
    image += rng.normal(0.0, _NOISE_SD_HU, size=image.shape)
    hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    logger.debug("phantom seed=%d shape=%s spacing=%s", seed, labels.shape, (sx, sy, sz))
    return Phantom(image=hu, labels=labels, spacing=(sx, sy, sz))
