"""A TotalSegmentator task run on one volume, in memory, on warm predictors: what the installed
package's ``totalsegmentator(...)`` and ``nnunet.nnUNet_predict_image`` do around nnU-Net, step by step,
with the package's own functions where they work on images in memory:

1. the volume as TotalSegmentator reads it: a NIfTI image (RAS affine, float64 voxels);
2. the rough crop model first when the task crops (organ classes, ``roi_subset`` or ``body_seg``), then
   ``cropping.crop_to_mask`` (int32 voxels) with its margin; an empty crop gives an empty label map;
3. ``alignment.as_closest_canonical``, then ``resampling.change_spacing`` to the task's spacing
   (order 1, int32);
4. nnU-Net on the array TotalSegmentator writes to disk and nnU-Net reads back ((z, y, x) of the
   canonical (x, y, z) array, spacing from the header), with the task's step and folds, without TTA;
   the three-slab split of very large multi-part inputs; each part of a multi-part task mapped to the
   task's label values with the package's class maps (later parts win);
5. ``postprocessing.remove_auxiliary_labels`` and the ``body`` task's blob filters;
6. ``change_spacing`` back to the canonical shape (order 0, the canonical affine forced),
   ``alignment.undo_canonical``, ``cropping.undo_crop``; ``roi_subset`` keeps only its classes.

No file is written and nothing is downloaded. ``predict`` (injected) runs one part on a warm predictor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.totalseg_tasks import TaskPart, TaskRun, TotalSegTask
from inference.volume import Geometry

logger = logging.getLogger(__name__)

#: Runs one part: (part, run, image (z, y, x) float32, spacing (x, y, z)) -> label map (z, y, x).
PartPredictor = Callable[[TaskPart, TaskRun, np.ndarray, tuple[float, float, float]], np.ndarray]

#: Above this many voxels (and 200 slices), multi-part inputs run as three overlapping slabs.
SPLIT_VOXELS = 512 * 512 * 900
_SPLIT_MARGIN = 20
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def to_nifti(array_zyx: np.ndarray, geometry: Geometry) -> Any:
    """The volume as a NIfTI image: (x, y, z) float64 voxels, RAS affine (what a DICOM-to-NIfTI
    converter gives TotalSegmentator, up to the order it stores rows in)."""
    import nibabel as nib

    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ geometry.matrix() @ np.diag(geometry.spacing)
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(geometry.origin, dtype=np.float64)
    data = np.asarray(array_zyx, dtype=np.float64).transpose(2, 1, 0)
    return nib.Nifti1Image(data, affine)


def segment(
    task: TotalSegTask, array_zyx: np.ndarray, geometry: Geometry, predict: PartPredictor
) -> np.ndarray:
    """The task's label map (z, y, x, uint8) on ``geometry``."""
    import nibabel as nib

    original = to_nifti(array_zyx, geometry)
    crop_mask = None
    addon = None
    if task.crop is not None:
        rough = predict_image(task.crop.run, original, predict)
        if task.crop.rois is None:
            mask = (rough > 0).astype(np.uint8)
        else:
            mask = np.isin(rough, task.crop.rois).astype(np.uint8)
        crop_mask = nib.Nifti1Image(mask, original.affine)
        addon = task.crop.addon_mm
    # Hand the only reference to the main run, so the float64 copy is freed before nnU-Net runs.
    pending = [original]
    del original
    labels = predict_image(task.main, pending.pop(), predict, crop_mask=crop_mask, addon_mm=addon)
    if task.roi_subset is not None:
        labels *= np.isin(labels, list(task.labels)).astype(np.uint8)
    return np.ascontiguousarray(labels.transpose(2, 1, 0))


def predict_image(
    run: TaskRun,
    original: Any,
    predict: PartPredictor,
    *,
    crop_mask: Any = None,
    addon_mm: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """One ``nnUNet_predict_image`` call: the run's label map (x, y, z, uint8) on ``original``'s grid."""
    import nibabel as nib
    from totalsegmentator.alignment import as_closest_canonical, undo_canonical
    from totalsegmentator.cropping import crop_to_mask, undo_crop
    from totalsegmentator.resampling import change_spacing

    image = nib.Nifti1Image(original.get_fdata(), original.affine)
    reference = _Grid(tuple(original.shape), np.array(original.affine))
    del original  # the caller may have handed over its last reference (see segment)
    bbox = None
    if crop_mask is not None:
        if crop_mask.get_fdata().sum() == 0:
            logger.info("TotalSegmentator %s: the crop mask is empty; empty result", run.task_name)
            return np.zeros(reference.shape, dtype=np.uint8)
        image, bbox = crop_to_mask(image, crop_mask, addon=list(addon_mm or (0, 0, 0)), dtype=np.int32)
    image = as_closest_canonical(image)
    canonical_shape, canonical_affine = image.shape, np.array(image.affine)
    if run.resample is not None:
        resampled = change_spacing(image, list(run.resample), order=1, dtype=np.int32, nr_cpus=1)
    else:
        resampled = image
    del image
    data = np.asarray(resampled.dataobj, dtype=np.float32)
    zooms = [float(z) for z in resampled.header.get_zooms()[:3]]
    resampled_affine = np.array(resampled.affine)
    del resampled  # nnU-Net gets only ``data``: no other copy of the volume stays alive meanwhile
    labels = _predict_parts(run, data, (zooms[0], zooms[1], zooms[2]), predict)
    del data

    prediction = _postprocess(run, nib.Nifti1Image(labels, resampled_affine))
    if run.resample is not None:
        prediction = change_spacing(
            prediction,
            list(run.resample),
            canonical_shape,
            order=0,
            dtype=np.uint8,
            nr_cpus=1,
            force_affine=canonical_affine,
        )
    prediction = undo_canonical(prediction, reference)
    if bbox is not None:
        prediction = undo_crop(prediction, reference, bbox)
    return np.asarray(prediction.get_fdata()).astype(np.uint8)


@dataclass(frozen=True)
class _Grid:
    """What ``undo_canonical`` / ``undo_crop`` read of the original image: its shape and affine."""

    shape: tuple[int, ...]
    affine: np.ndarray


def _slabs(data: np.ndarray, run: TaskRun) -> list[tuple[slice, slice]]:
    """(input slab, kept part of its output) along z: the whole array, or three overlapping slabs when
    TotalSegmentator splits (multi-part runs on more than :data:`SPLIT_VOXELS` voxels, > 200 slices)."""
    depth = data.shape[2]
    if not (run.multi_part and data.size > SPLIT_VOXELS and depth > 200):
        return [(slice(0, depth), slice(0, depth))]
    third, margin = depth // 3, _SPLIT_MARGIN
    return [
        (slice(0, third + margin), slice(0, third)),
        (slice(third + 1 - margin, third * 2 + margin), slice(margin - 1, margin - 1 + third)),
        (slice(third * 2 + 1 - margin, depth), slice(margin - 1, None)),
    ]


def _predict_parts(
    run: TaskRun, data_xyz: np.ndarray, spacing: tuple[float, float, float], predict: PartPredictor
) -> np.ndarray:
    slabs = _slabs(data_xyz, run)
    merged = np.zeros(data_xyz.shape, dtype=np.uint8)
    for part in run.parts:
        for (source, kept), start in zip(slabs, _starts(slabs), strict=True):
            image = np.ascontiguousarray(data_xyz[:, :, source].transpose(2, 1, 0))
            found = np.asarray(predict(part, run, image, spacing)).transpose(2, 1, 0)[:, :, kept]
            target = merged[:, :, start : start + found.shape[2]]
            if run.multi_part:
                lut = np.zeros(max(max(part.to_task), int(found.max(initial=0))) + 1, dtype=np.uint8)
                for value, task_value in part.to_task.items():
                    lut[value] = task_value
                mapped = lut[found.astype(np.intp)]
                np.copyto(target, mapped, where=mapped != 0)
            else:
                target[...] = found
    return merged


def _starts(slabs: list[tuple[slice, slice]]) -> list[int]:
    if len(slabs) == 1:
        return [0]
    third = int(slabs[0][1].stop)
    return [0, third, third * 2]


def _postprocess(run: TaskRun, prediction: Any) -> Any:
    import nibabel as nib
    from totalsegmentator.postprocessing import (
        keep_largest_blob_multilabel,
        remove_auxiliary_labels,
        remove_small_blobs_multilabel,
    )

    prediction = remove_auxiliary_labels(prediction, run.task_name)
    if run.task_name == "body":
        data = keep_largest_blob_multilabel(
            prediction.get_fdata().astype(np.uint8), run.labels, ["body_trunc"], debug=False, quiet=True
        )
        prediction = nib.Nifti1Image(data, prediction.affine)
        voxel_volume = float(np.prod(prediction.header.get_zooms()))
        data = remove_small_blobs_multilabel(
            prediction.get_fdata().astype(np.uint8),
            run.labels,
            ["body_extremities"],
            interval=[50000 / voxel_volume, 1e10],
            debug=False,
            quiet=True,
        )
        prediction = nib.Nifti1Image(data, prediction.affine)
    return prediction


def run_on_cache(
    task: TotalSegTask,
    images: list[np.ndarray],
    geometry: Geometry,
    cache: Any,
    *,
    folds: Any,
    checkpoint: str,
    tta: bool,
    tile_step_size: float,
    min_mem_mib: float | None,
) -> np.ndarray:
    """:func:`segment` with every part on ``cache`` (an :class:`inference.predictors.PredictorCache`).

    ``folds``, ``checkpoint``, ``tta`` and ``tile_step_size`` are the stage's (the spec defaults are the
    task's); the crop model runs as TotalSegmentator runs it (fold 0, its own step, no TTA)."""
    if len(images) != 1:
        raise ValueError(f"TotalSegmentator task {task.task} takes one input series, got {len(images)}")
    if tuple(images[0].shape) != tuple(geometry.shape):
        raise ValueError(
            f"TotalSegmentator task {task.task}: input {images[0].shape} is not on {geometry.shape}"
        )
    main_folds = None if folds == "all" else folds

    def predict(
        part: TaskPart, run: TaskRun, image: np.ndarray, spacing: tuple[float, float, float]
    ) -> np.ndarray:
        is_main = run is task.main
        prediction = cache.predict(
            part.model_dir,
            [image],
            spacing,
            folds=main_folds if is_main else (None if run.folds == "all" else run.folds),
            checkpoint=checkpoint if is_main else "checkpoint_final.pth",
            tta=tta if is_main else False,
            tile_step_size=tile_step_size if is_main else run.step_size,
            min_mem_mib=min_mem_mib,
        )
        return np.asarray(prediction.labels)

    return segment(task, images[0], geometry, predict)
