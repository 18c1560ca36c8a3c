"""DICOM files of one series -> ``SourceSeries``: a float32 volume (rescaled values, slices sorted along
the normal, SimpleITK geometry conventions) and the headers a SEG needs to reference the source.

Each file is read once: headers are checked and the slices arranged before any pixel is decoded;
then each kept image is decoded from the dataset already in memory, rescaled straight into the
preallocated volume, and its bulk pixel elements are dropped. Helpers:
``inference.series_frames`` (per-slice header facts, enhanced functional groups),
``inference.series_geometry`` (sorting and consistency checks), ``inference.series_decode``
(decoder plugin choice) and ``inference.series_files`` (folders, grouping by series).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from inference.errors import SeriesError
from inference.inflate_guard import DEFAULT_MAX_INFLATED_BYTES, check_inflated_size
from inference.series_decode import decode_pixels
from inference.series_files import SeriesFiles, find_dicom_files, group_series_files
from inference.series_frames import SliceInfo, is_multiframe, slice_from_file, slices_from_multiframe
from inference.series_geometry import Arrangement, arrange_slices
from inference.volume import Volume

__all__ = [
    "SeriesFiles",
    "SourceSeries",
    "find_dicom_files",
    "group_series_files",
    "load_series",
    "load_series_dir",
]

logger = logging.getLogger(__name__)

Select = Callable[[Dataset], bool]

# SOP classes that carry pixel data but are not source images for segmentation.
NON_SOURCE_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose Storage
        "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image Storage
    }
)


@dataclass(frozen=True)
class SourceSeries:
    """A loaded series.

    ``volume``: float32 values after Rescale Slope/Intercept (per slice or per frame), (z, y, x).
    ``headers``: single-frame input: one dataset per slice in volume order; enhanced multi-frame
    input: the one dataset, with ``frame_order[k]`` the 0-based frame index shown as slice k.
    Bulk pixel elements (group 7FE0, overlay data) are removed from the headers.
    ``sop_instance_uids`` and ``source_paths`` are per slice in volume order (the same UID and path
    repeated for a multi-frame file). ``warnings``: things dropped or assumed (e.g. localizers).
    """

    volume: Volume
    headers: list[Dataset]
    study_uid: str
    series_uid: str
    modality: str
    sop_class_uid: str
    sop_instance_uids: list[str]
    source_paths: list[Path]
    warnings: list[str]
    frame_order: list[int] | None = None

    @property
    def is_multiframe(self) -> bool:
        return self.frame_order is not None


def _read(path: Path, max_inflated_bytes: int) -> Dataset:
    check_inflated_size(path, max_inflated_bytes)
    try:
        return dcmread(path)
    except Exception as exc:  # pydicom raises many types for broken files; name the file in all cases
        raise SeriesError(f"{path}: unreadable DICOM file: {type(exc).__name__}: {exc}") from exc


def _check_image(ds: Dataset, path: Path) -> None:
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    name = sop_class.name or "no SOP Class UID"
    if "PixelData" not in ds or sop_class in NON_SOURCE_CLASSES:
        raise SeriesError(f"{path}: not an image for segmentation (SOP class {name}, {sop_class})")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise SeriesError(
            f"{path}: colour image ({ds.get('PhotometricInterpretation')}, SamplesPerPixel "
            f"{ds.SamplesPerPixel}); only greyscale series can be segmented"
        )


def _strip_bulk(ds: Dataset) -> None:
    """Remove pixel data and other bulk pixel elements (group 7FE0, overlay data 60xx,3000)."""
    for tag in list(ds.keys()):
        if tag.group == 0x7FE0 or (0x6000 <= tag.group <= 0x601E and tag.element == 0x3000):
            del ds[tag]


@dataclass
class _Read:
    datasets: list[Dataset]
    paths: list[Path]
    warnings: list[str]


def _read_all(paths: Sequence[Path], select: Select | None, max_inflated_bytes: int) -> _Read:
    datasets: list[Dataset] = []
    kept_paths: list[Path] = []
    seen: dict[str, Path] = {}
    duplicates: list[str] = []
    skipped = 0
    for path in paths:
        path = Path(path)
        ds = _read(path, max_inflated_bytes)
        if select is not None and not select(ds):
            skipped += 1
            continue
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid and uid in seen:
            duplicates.append(f"{path.name} (same SOP Instance UID as {seen[uid].name})")
            continue
        seen[uid] = path
        datasets.append(ds)
        kept_paths.append(path)
    warnings = []
    if skipped:
        warnings.append(f"select= excluded {skipped} of {len(paths)} file(s)")
    if duplicates:
        warnings.append(f"ignored {len(duplicates)} duplicate file(s): {', '.join(duplicates[:5])}")
    if not datasets:
        raise SeriesError(f"none of the {len(paths)} file(s) was selected (select= excluded all)")
    return _Read(datasets, kept_paths, warnings)


def _one_value(read: _Read, keyword: str, what: str) -> str:
    by_value: dict[str, list[Path]] = {}
    for ds, path in zip(read.datasets, read.paths, strict=True):
        by_value.setdefault(str(ds.get(keyword, "") or ""), []).append(path)
    if "" in by_value:
        missing = by_value[""]
        raise SeriesError(
            f"{missing[0]}: {keyword} missing ({len(missing)} file(s) without it); "
            "the file may be truncated or not an image"
        )
    if len(by_value) > 1:
        listing = "; ".join(
            f"{_uid_text(value)} ({len(files)} file(s), e.g. {files[0].name})"
            for value, files in by_value.items()
        )
        raise SeriesError(f"files of {len(by_value)} {what} given, load one at a time: {listing}")
    return next(iter(by_value))


def _uid_text(value: str) -> str:
    name = UID(value).name
    return f"{name} ({value})" if name and name != value else value


def _slices(read: _Read, where: str) -> list[SliceInfo]:
    multi = [p for ds, p in zip(read.datasets, read.paths, strict=True) if is_multiframe(ds)]
    if multi and len(read.datasets) > 1:
        raise SeriesError(
            f"{where}: {len(multi)} multi-frame file(s) among {len(read.datasets)} files "
            f"(e.g. {multi[0].name}); only one enhanced multi-frame file per series, or single-frame "
            "files only, are supported"
        )
    if multi:
        return slices_from_multiframe(read.datasets[0], 0, read.paths[0])
    for ds, path in zip(read.datasets, read.paths, strict=True):
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise SeriesError(
                f"{path}: multi-frame image without functional groups ({ds.get('NumberOfFrames')} "
                f"frames, SOP class {UID(str(ds.SOPClassUID)).name}) is not supported"
            )
    return [
        slice_from_file(ds, i, p) for i, (ds, p) in enumerate(zip(read.datasets, read.paths, strict=True))
    ]


def _rescale_into(out: np.ndarray, stored: np.ndarray, slope: float, intercept: float) -> None:
    if slope == 1.0:
        out[...] = stored
    else:
        np.multiply(stored, np.float32(slope), out=out, casting="unsafe")
    if intercept != 0.0:
        out += np.float32(intercept)


def _expect_shape(pixels: np.ndarray, shape: tuple[int, ...], path: Path) -> None:
    if pixels.shape != shape:
        raise SeriesError(f"{path}: decoded pixel data has shape {pixels.shape}, header says {shape}")


def _fill(read: _Read, arrangement: Arrangement) -> np.ndarray:
    shape = arrangement.geometry.shape
    volume = np.empty(shape, dtype=np.float32)
    slices = arrangement.slices
    if slices[0].frame is not None:  # one multi-frame dataset
        ds, path = read.datasets[0], read.paths[0]
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        pixels = decode_pixels(ds, path)
        pixels = pixels.reshape((frames, *pixels.shape[-2:])) if pixels.ndim == 2 else pixels
        _expect_shape(pixels, (frames, shape[1], shape[2]), path)
        _strip_bulk(ds)
        for k, s in enumerate(slices):
            _rescale_into(volume[k], pixels[s.frame], s.slope, s.intercept)
        return volume
    for k, s in enumerate(slices):
        ds, path = read.datasets[s.source], read.paths[s.source]
        pixels = decode_pixels(ds, path)
        _expect_shape(pixels, shape[1:], path)
        _strip_bulk(ds)
        _rescale_into(volume[k], pixels, s.slope, s.intercept)
    return volume


def load_series(
    paths: Sequence[Path],
    *,
    spacing_tolerance: float = 0.05,
    orientation_tolerance: float = 1e-3,
    min_slices: int = 2,
    select: Select | None = None,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> SourceSeries:
    """Load the DICOM files of one series as a volume, or raise SeriesError saying what is wrong.

    ``spacing_tolerance``: largest allowed deviation of a slice step from the typical step, as a
    fraction of it (gaps beyond it are refused, naming the slices around them).
    ``orientation_tolerance``: largest difference of a direction cosine still counted as the same
    orientation. ``min_slices``: fewer usable slices are refused (1 allows a single slice, whose
    spacing then comes from SpacingBetweenSlices/SliceThickness).
    ``select``: keep only files for which ``select(dataset)`` is true (called before any pixel is
    decoded), e.g. one b-value of a DWI series, one temporal position; a multi-frame file is kept or
    dropped whole. ``max_inflated_bytes``: a deflated file inflating beyond this is refused before
    pydicom inflates it whole (decompression bombs).
    """
    if not paths:
        raise SeriesError("no DICOM files given")
    started = time.perf_counter()
    read = _read_all(paths, select, max_inflated_bytes)
    series_uid = _one_value(read, "SeriesInstanceUID", "series")
    where = f"series {series_uid}"
    for ds, path in zip(read.datasets, read.paths, strict=True):
        _check_image(ds, path)
    sop_class = _one_value(read, "SOPClassUID", "SOP classes")
    slices = _slices(read, where)
    arrangement = arrange_slices(
        slices,
        where=where,
        spacing_tolerance=spacing_tolerance,
        orientation_tolerance=orientation_tolerance,
        min_slices=min_slices,
    )
    array = _fill(read, arrangement)
    ordered = arrangement.slices
    multiframe = ordered[0].frame is not None
    headers = read.datasets[:1] if multiframe else [read.datasets[s.source] for s in ordered]
    first = headers[0]
    result = SourceSeries(
        volume=Volume(array=array, geometry=arrangement.geometry),
        headers=headers,
        study_uid=str(first.get("StudyInstanceUID", "")),
        series_uid=series_uid,
        modality=str(first.get("Modality", "")),
        sop_class_uid=sop_class,
        sop_instance_uids=[s.sop_instance_uid for s in ordered],
        source_paths=[read.paths[s.source] for s in ordered],
        warnings=read.warnings + arrangement.warnings,
        frame_order=[int(s.frame) for s in ordered if s.frame is not None] if multiframe else None,
    )
    logger.info(
        "%s: loaded %d slice(s) of %dx%d from %d file(s) in %.2f s (spacing %s mm)",
        where,
        array.shape[0],
        array.shape[1],
        array.shape[2],
        len(read.paths),
        time.perf_counter() - started,
        ", ".join(f"{v:.3g}" for v in arrangement.geometry.spacing),
    )
    return result


def load_series_dir(
    folder: Path,
    *,
    spacing_tolerance: float = 0.05,
    orientation_tolerance: float = 1e-3,
    min_slices: int = 2,
    select: Select | None = None,
) -> SourceSeries:
    """``load_series`` on the DICOM files under ``folder`` (non-DICOM files and DICOMDIR ignored).

    The folder must hold one series; files of several series are refused, listing them.
    """
    paths = find_dicom_files(Path(folder))
    if not paths:
        raise SeriesError(f"{folder}: no DICOM files found")
    return load_series(
        paths,
        spacing_tolerance=spacing_tolerance,
        orientation_tolerance=orientation_tolerance,
        min_slices=min_slices,
        select=select,
    )
