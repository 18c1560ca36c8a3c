"""Find the DICOM files of a folder and group them by series (for ``predict --input DIR``).

A file counts as DICOM when it has the Part 10 preamble ("DICM" at byte 128); DICOMDIR files (by
name or by their Media Storage SOP Class) are skipped. Grouping reads headers only, up to the pixel
data, never the pixels themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import MediaStorageDirectoryStorage

from inference.errors import SeriesError
from inference.inflate_guard import check_inflated_size

logger = logging.getLogger(__name__)

_MAGIC_OFFSET = 128
_MAGIC = b"DICM"
_GROUP_TAGS = (
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SOPClassUID",
)


def has_dicom_preamble(path: Path) -> bool:
    """True when ``path`` is a file with the DICOM Part 10 magic bytes."""
    try:
        with path.open("rb") as fh:
            fh.seek(_MAGIC_OFFSET)
            return fh.read(4) == _MAGIC
    except OSError:
        return False


def _walk(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.name.startswith(".") or any(p.startswith(".") for p in path.relative_to(folder).parts):
            continue
        if path.is_file():
            yield path


def _is_media_directory(path: Path) -> bool:
    """True for a DICOMDIR, whatever its file name (read from the file meta only)."""
    try:
        meta = read_file_meta_info(path)
    except Exception:  # a broken file is kept: load_series will name it in its error
        return False
    return bool(meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage)


def find_dicom_files(folder: Path) -> list[Path]:
    """DICOM Part 10 files under ``folder`` (recursively, hidden entries and DICOMDIR skipped)."""
    if not folder.is_dir():
        raise SeriesError(f"{folder}: not a folder")
    found = []
    skipped = 0
    for path in _walk(folder):
        if path.name.upper() == "DICOMDIR" or not has_dicom_preamble(path) or _is_media_directory(path):
            skipped += 1
            continue
        found.append(path)
    if skipped:
        logger.debug("%s: skipped %d non-DICOM file(s) or DICOMDIR", folder, skipped)
    return found


@dataclass
class SeriesFiles:
    """The files of one series found in a folder, with what a user needs to tell series apart."""

    series_uid: str
    study_uid: str
    modality: str
    description: str
    number: str
    paths: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        text = f"series {self.series_uid} ({self.modality}"
        if self.number:
            text += f" #{self.number}"
        if self.description:
            text += f" '{self.description}'"
        return f"{text}, {len(self.paths)} file(s))"


def group_series_files(folder: Path) -> dict[str, SeriesFiles]:
    """The DICOM files under ``folder`` grouped by SeriesInstanceUID, in order of first appearance.

    Files that pydicom cannot parse, or that have no SeriesInstanceUID, raise a SeriesError naming
    them.
    """
    groups: dict[str, SeriesFiles] = {}
    for path in find_dicom_files(folder):
        check_inflated_size(path)
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=list(_GROUP_TAGS))
        except Exception as exc:  # pydicom raises many types for broken files
            raise SeriesError(f"{path}: cannot read DICOM header: {exc}") from exc
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise SeriesError(f"{path}: no SeriesInstanceUID")
        entry = groups.get(uid)
        if entry is None:
            entry = SeriesFiles(
                series_uid=uid,
                study_uid=str(ds.get("StudyInstanceUID", "") or ""),
                modality=str(ds.get("Modality", "") or ""),
                description=str(ds.get("SeriesDescription", "") or ""),
                number=str(ds.get("SeriesNumber", "") or ""),
            )
            groups[uid] = entry
        entry.paths.append(path)
    return groups
