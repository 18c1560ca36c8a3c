"""Slices -> one regular stack: drop localizers, check the headers agree, sort along the slice normal,
refuse duplicates, stacked acquisitions, gaps and sheared (tilted) stacks, and derive the Geometry.

Conventions follow ``inference.volume`` and SimpleITK's ImageSeriesReader: x spacing is the column
spacing (PixelSpacing[1]), y the row spacing (PixelSpacing[0]), z the mean distance between consecutive
positions along the normal; the direction's columns are the row cosines, the column cosines and their
cross product; the origin is the position of the first slice along the normal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference.errors import SeriesError
from inference.series_frames import SliceInfo
from inference.volume import Geometry

logger = logging.getLogger(__name__)

# Two positions closer than this along the normal are "the same location" (mm).
DUPLICATE_DISTANCE_MM = 0.01
# Slices of other orientations are dropped as localizers when there are at most this many of them,
# or at most this fraction of the series (whichever is larger); more means a genuinely mixed series.
STRAY_MAX_COUNT = 3
STRAY_MAX_FRACTION = 0.1
# Positions may drift within the image plane by this fraction of a pixel over the whole stack; more is
# refused when the stack leans more than TILT_MAX_DEGREES off the normal (gantry tilt), else a warning.
DRIFT_MAX_PIXELS = 0.2
TILT_MAX_DEGREES = 0.2
_LISTED = 3  # how many offending items an error message names


@dataclass(frozen=True)
class Arrangement:
    """The slices that make the volume, in volume order, and their geometry."""

    slices: list[SliceInfo]
    geometry: Geometry
    warnings: list[str]


def _names(slices: Sequence[SliceInfo], limit: int = _LISTED) -> str:
    shown = ", ".join(s.label for s in slices[:limit])
    more = len(slices) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _drop_localizers(slices: list[SliceInfo], where: str, warnings: list[str]) -> list[SliceInfo]:
    localizers = [s for s in slices if s.localizer]
    if not localizers:
        return slices
    kept = [s for s in slices if not s.localizer]
    if not kept:
        raise SeriesError(f"{where}: all {len(slices)} images are localizers (ImageType LOCALIZER)")
    warnings.append(
        f"dropped {len(localizers)} localizer image(s) (ImageType LOCALIZER): {_names(localizers, 10)}"
    )
    return kept


def _require_geometry(slices: Sequence[SliceInfo], where: str) -> None:
    for attribute, missing in (
        ("ImagePositionPatient", [s for s in slices if s.position is None]),
        ("ImageOrientationPatient", [s for s in slices if s.orientation is None]),
        ("PixelSpacing", [s for s in slices if s.pixel_spacing is None]),
    ):
        if missing:
            raise SeriesError(
                f"{where}: {attribute} missing or invalid in {len(missing)} of {len(slices)} images "
                f"({_names(missing)}); cannot place the slices in patient space"
            )


def _orientation_groups(slices: Sequence[SliceInfo], tolerance: float) -> list[list[SliceInfo]]:
    groups: list[tuple[np.ndarray, list[SliceInfo]]] = []
    for s in slices:
        cosines = np.asarray(s.orientation, dtype=np.float64)
        for reference, members in groups:
            if float(np.max(np.abs(reference - cosines))) <= tolerance:
                members.append(s)
                break
        else:
            groups.append((cosines, [s]))
    return sorted((members for _, members in groups), key=len, reverse=True)


def _main_orientation(
    slices: list[SliceInfo], tolerance: float, where: str, warnings: list[str]
) -> list[SliceInfo]:
    groups = _orientation_groups(slices, tolerance)
    if len(groups) == 1:
        return slices
    main, strays = groups[0], [s for g in groups[1:] for s in g]
    limit = max(STRAY_MAX_COUNT, int(STRAY_MAX_FRACTION * len(slices)))
    if len(main) == len(groups[1]) or len(strays) > limit:
        listing = "; ".join(f"{_fmt(g[0].orientation or ())} ({len(g)} images)" for g in groups[:4])
        raise SeriesError(
            f"{where}: mixed ImageOrientationPatient ({len(groups)} orientations: {listing}); "
            "a series must be one stack of parallel slices"
        )
    warnings.append(
        f"dropped {len(strays)} image(s) whose orientation differs from the other {len(main)} "
        f"(localizers?): {_names(strays, 10)}"
    )
    return main


def _require_same(slices: Sequence[SliceInfo], where: str) -> None:
    sizes: dict[tuple[int, int], list[SliceInfo]] = {}
    for s in slices:
        sizes.setdefault((s.rows, s.columns), []).append(s)
    if len(sizes) > 1:
        listing = "; ".join(f"{r}x{c} ({len(m)} images, e.g. {m[0].label})" for (r, c), m in sizes.items())
        raise SeriesError(f"{where}: images differ in size (Rows x Columns): {listing}")
    spacings = np.asarray([s.pixel_spacing for s in slices], dtype=np.float64)
    spread = spacings.max(axis=0) - spacings.min(axis=0)
    if float(spread.max()) > 1e-3 * float(spacings.min()):
        odd = [s for s in slices if s.pixel_spacing != slices[0].pixel_spacing]
        raise SeriesError(
            f"{where}: PixelSpacing differs between images: {_fmt(slices[0].pixel_spacing or ())} in "
            f"{slices[0].label} but {_fmt(odd[0].pixel_spacing or ())} in {_names(odd)}"
        )


def _axes(orientation: Sequence[float], where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 0.9 or abs(float(np.dot(row, col))) > 0.01:
        raise SeriesError(
            f"{where}: ImageOrientationPatient {_fmt(orientation)} is not two orthogonal unit vectors"
        )
    return row / np.linalg.norm(row), col / np.linalg.norm(col), normal / norm


def _differing(slices: Sequence[SliceInfo]) -> str:
    """Which stack attributes take several values among ``slices`` (for messages)."""
    parts = []
    table = [s.stack_values() for s in slices]
    for index, (name, _) in enumerate(table[0]):
        values = sorted({row[index][1] for row in table})
        if len(values) > 1:
            parts.append(f"{name} {', '.join(values[:6])}")
    return "; ".join(parts)


def _refuse_duplicates(ordered: list[SliceInfo], depth: np.ndarray, where: str) -> None:
    clusters: list[list[int]] = [[0]]
    for i in range(1, len(ordered)):
        if depth[i] - depth[clusters[-1][0]] < DUPLICATE_DISTANCE_MM:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    crowded = [c for c in clusters if len(c) > 1]
    if not crowded:
        return
    sizes = {len(c) for c in clusters}
    first = [ordered[i] for i in crowded[0]]
    differ = _differing(first)
    differ_text = f" (they differ in {differ})" if differ else ""
    if len(sizes) == 1:
        raise SeriesError(
            f"{where}: {len(first)} images at each of {len(clusters)} positions{differ_text}: several "
            "acquisitions, temporal positions or b-values are stacked in one series. Load one of them "
            "(load_series(select=...), e.g. keep one b-value as the request argument "
            "bvalue_for_filtering intends) or split the series"
        )
    examples = "; ".join(
        f"{' and '.join(ordered[i].label for i in c)} at {depth[c[0]]:.3f} mm" for c in crowded[:_LISTED]
    )
    raise SeriesError(
        f"{where}: duplicate slice positions at {len(crowded)} location(s){differ_text}: {examples}"
    )


def _check_spacing(ordered: list[SliceInfo], depth: np.ndarray, tolerance: float, where: str) -> None:
    steps = np.diff(depth)
    typical = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - typical) > tolerance * typical)
    if bad.size == 0:
        return
    details = []
    for i in bad[:_LISTED]:
        ratio = steps[i] / typical
        hint = f", about {round(ratio) - 1} missing slice(s)" if ratio > 1.5 else ""
        details.append(f"{steps[i]:.3f} mm between {ordered[i].label} and {ordered[i + 1].label}{hint}")
    more = f" and {bad.size - _LISTED} more" if bad.size > _LISTED else ""
    raise SeriesError(
        f"{where}: slice spacing is not uniform (typical {typical:.3f} mm, tolerance "
        f"{tolerance:.0%}): {'; '.join(details)}{more}"
    )


def _check_drift(
    ordered: list[SliceInfo],
    positions: np.ndarray,
    normal: np.ndarray,
    pixel: float,
    where: str,
    warnings: list[str],
) -> None:
    """Refuse stacks whose positions wander within the image plane (gantry tilt, shear): a regular
    grid along the normal would misplace their voxels. Tiny angles (rounded cosines) only warn."""
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(in_plane, axis=1).max())
    if drift <= max(0.01, DRIFT_MAX_PIXELS * pixel):
        return
    length = float(offsets[-1] @ normal)
    angle = float(np.degrees(np.arctan2(drift, abs(length))))
    text = (
        f"slice positions drift {drift:.2f} mm within the image plane between {ordered[0].label} and "
        f"{ordered[-1].label} ({angle:.2f} degrees off the slice normal)"
    )
    if angle > TILT_MAX_DEGREES:
        raise SeriesError(
            f"{where}: {text}: gantry tilt or sheared stack; resample the series to an orthogonal grid first"
        )
    warnings.append(f"{text}; ignored, the volume assumes slices stacked along the normal")


def arrange_slices(
    slices: list[SliceInfo],
    *,
    where: str,
    spacing_tolerance: float,
    orientation_tolerance: float,
    min_slices: int,
) -> Arrangement:
    """Order ``slices`` along their normal and derive the volume geometry, or raise SeriesError."""
    warnings: list[str] = []
    kept = _drop_localizers(slices, where, warnings)
    _require_geometry(kept, where)
    kept = _main_orientation(kept, orientation_tolerance, where, warnings)
    _require_same(kept, where)

    _, _, normal = _axes(kept[0].orientation or (), where)
    depth_unsorted = np.asarray([np.dot(s.position or (), normal) for s in kept])
    order = np.argsort(depth_unsorted, kind="stable")
    ordered = [kept[i] for i in order]
    depth = depth_unsorted[order]
    positions = np.asarray([s.position for s in ordered], dtype=np.float64)

    _refuse_duplicates(ordered, depth, where)
    row, col, normal = _axes(ordered[0].orientation or (), where)  # as SimpleITK: the first slice's
    depth = positions @ normal
    if len(ordered) < min_slices:
        raise SeriesError(f"{where}: only {len(ordered)} usable slice(s), at least {min_slices} needed")
    row_spacing, col_spacing = ordered[0].pixel_spacing or (1.0, 1.0)
    if len(ordered) > 1:
        _check_spacing(ordered, depth, spacing_tolerance, where)
        _check_drift(ordered, positions, normal, min(row_spacing, col_spacing), where, warnings)
        z_spacing = float(depth[-1] - depth[0]) / (len(ordered) - 1)
    else:
        z_spacing = ordered[0].nominal_spacing or 1.0
        warnings.append(f"single slice: slice spacing {z_spacing:g} mm taken from the header")

    matrix = np.column_stack([row, col, normal])
    geometry = Geometry(
        spacing=(float(col_spacing), float(row_spacing), z_spacing),
        origin=(float(positions[0, 0]), float(positions[0, 1]), float(positions[0, 2])),
        direction=tuple(float(v) for v in matrix.ravel()),  # type: ignore[arg-type]
        shape=(len(ordered), ordered[0].rows, ordered[0].columns),
    )
    for message in warnings:
        logger.warning("%s: %s", where, message)
    return Arrangement(slices=ordered, geometry=geometry, warnings=warnings)
