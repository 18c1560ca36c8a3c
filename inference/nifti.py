"""NIfTI copies of inputs, label maps and probabilities, for research use beside the DICOM SEG.

A :class:`~inference.volume.Geometry` is in LPS (DICOM); NIfTI's affine maps voxel (i, j, k) to
RAS, so the first two rows of the LPS affine change sign. Arrays are (z, y, x) here and (x, y, z)
in NIfTI; probabilities (classes, z, y, x) become a 4D image (x, y, z, classes). Files are written
to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from inference.atomic import atomic_path
from inference.errors import InferenceError
from inference.volume import Geometry

logger = logging.getLogger(__name__)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_affine(geometry: Geometry) -> np.ndarray:
    """4x4 affine from voxel (x, y, z) indices to RAS mm."""
    lps = np.eye(4)
    lps[:3, :3] = geometry.matrix() * np.asarray(geometry.spacing)[None, :]
    lps[:3, 3] = geometry.origin
    affine: np.ndarray = _LPS_TO_RAS @ lps
    return affine


def write_nifti(array: np.ndarray, geometry: Geometry, path: Path) -> Path:
    """Write a (z, y, x) volume or a (channels, z, y, x) stack on ``geometry`` as ``.nii.gz``."""
    data = np.asarray(array)
    if data.shape[-3:] != tuple(geometry.shape) or data.ndim not in (3, 4):
        raise InferenceError(
            f"cannot write {path.name}: array {data.shape} does not match grid {geometry.shape}"
        )
    # (z, y, x) -> (x, y, z); (c, z, y, x) -> (x, y, z, c)
    data = data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype == np.float16:  # NIfTI-1 has no half floats
        data = data.astype(np.float32)
    image = nib.Nifti1Image(np.ascontiguousarray(data), ras_affine(geometry))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    with atomic_path(path, suffix=".nii.gz") as temp:  # nibabel picks the format by the extension
        nib.save(image, temp)
    logger.debug("wrote %s %s", path, data.shape)
    return path
