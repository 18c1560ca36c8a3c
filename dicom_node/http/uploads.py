"""Unpacking uploaded archives without trusting them.

An upload (``POST /infer_file``) or an Orthanc series archive is a zip, a tar (optionally gzip, bzip2
or xz compressed) or one bare DICOM file. :func:`unpack` writes its regular files into a fresh folder
under names *we* choose (``00000.dcm``, ``00001.dcm`` ...), so no member name ever becomes a path: a
zip/tar slip is impossible by construction. It is still refused, loudly, because an archive that
tries it is hostile or broken:

- member names that are absolute, contain ``..`` or a NUL, or (Windows) a drive letter;
- links (symbolic or hard), devices, FIFOs: only regular files and folders are accepted;
- more than ``max_files`` files;
- more than ``max_unpacked`` bytes in total, counted on the bytes actually decompressed (headers can
  lie), and zip members whose compression ratio exceeds ``max_ratio`` (a decompression bomb).

Everything raises :class:`UnsafeUploadError` with a message naming the member; the caller removes the
folder. ``__MACOSX/`` resource forks and names starting with ``.`` are skipped.
"""

from __future__ import annotations

import logging
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from dicom_node.errors import NodeError

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_DICM_OFFSET = 128


class UnsafeUploadError(NodeError):
    """An upload was refused: not an archive we can read, or an archive that is unsafe to unpack."""


@dataclass(frozen=True)
class UnpackLimits:
    max_files: int = 20000
    max_unpacked: int = 8 * 1024**3
    max_ratio: float = 200.0


@dataclass(frozen=True)
class Unpacked:
    files: tuple[Path, ...]
    skipped: tuple[str, ...]  # member names skipped (hidden files, resource forks)
    kind: str  # zip | tar | dicom


def _check_name(name: str) -> str | None:
    """Why a member name is unsafe, or None."""
    if not name or "\x00" in name:
        return "an empty or NUL-containing name"
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(text).parts:
        return "a '..' component (zip/tar slip)"
    return None


def _skipped(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


class _Writer:
    """Writes members to numbered files and enforces the count and total-size limits."""

    def __init__(self, folder: Path, limits: UnpackLimits) -> None:
        self.folder = folder
        self.limits = limits
        self.files: list[Path] = []
        self.total = 0

    def write(self, name: str, source: IO[bytes], *, compressed: int | None = None) -> None:
        if len(self.files) >= self.limits.max_files:
            raise UnsafeUploadError(f"more than {self.limits.max_files} files in the archive")
        target = self.folder / f"{len(self.files):05d}.dcm"
        written = 0
        with target.open("xb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if self.total > self.limits.max_unpacked:
                    raise UnsafeUploadError(
                        f"{name}: the archive unpacks to more than {self.limits.max_unpacked} bytes"
                    )
                if compressed is not None and written > max(compressed, 1) * self.limits.max_ratio + _CHUNK:
                    raise UnsafeUploadError(
                        f"{name}: compression ratio above {self.limits.max_ratio:.0f}:1 (decompression bomb)"
                    )
                out.write(chunk)
        self.files.append(target)


def _zip_members(archive: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    for info in archive.infolist():
        problem = _check_name(info.filename)
        if problem:
            raise UnsafeUploadError(f"archive member {info.filename!r}: {problem}")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix file type recorded (a plain file)
        if kind == stat.S_IFLNK:
            raise UnsafeUploadError(f"archive member {info.filename!r}: a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeUploadError(f"archive member {info.filename!r}: not a regular file")
        if info.flag_bits & 0x1:
            raise UnsafeUploadError(f"archive member {info.filename!r}: encrypted")
        yield info


def _unpack_zip(path: Path, writer: _Writer, skipped: list[str]) -> None:
    with zipfile.ZipFile(path) as archive:
        members = list(_zip_members(archive))  # every name is checked before anything is written
        declared = sum(i.file_size for i in members if not i.is_dir())
        if declared > writer.limits.max_unpacked:
            raise UnsafeUploadError(
                f"the archive declares {declared} bytes, more than {writer.limits.max_unpacked}"
            )
        for info in members:
            if info.is_dir():
                continue
            if _skipped(info.filename):
                skipped.append(info.filename)
                continue
            with archive.open(info) as source:
                writer.write(info.filename, source, compressed=info.compress_size)


def _unpack_tar(path: Path, writer: _Writer, skipped: list[str]) -> None:
    with tarfile.open(path, mode="r:*") as archive:
        members = archive.getmembers()  # reads the whole (decompressed) stream once: bounded below
        for member in members:
            problem = _check_name(member.name)
            if problem:
                raise UnsafeUploadError(f"archive member {member.name!r}: {problem}")
            if member.issym() or member.islnk():
                raise UnsafeUploadError(f"archive member {member.name!r}: a link")
            if not (member.isfile() or member.isdir()):
                raise UnsafeUploadError(f"archive member {member.name!r}: not a regular file")
        for member in members:
            if member.isdir():
                continue
            if _skipped(member.name):
                skipped.append(member.name)
                continue
            source = archive.extractfile(member)
            if source is None:
                raise UnsafeUploadError(f"archive member {member.name!r}: cannot be read")
            with source:
                writer.write(member.name, source)


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as fp:
        head = fp.read(_DICM_OFFSET + 4)
    return head[_DICM_OFFSET:] == b"DICM"


def _tar_within_limit(path: Path, limits: UnpackLimits) -> None:
    """A compressed tar is decompressed once to list it; refuse a bomb before that."""
    total = count = 0
    try:
        with tarfile.open(path, mode="r|*") as stream:
            for member in stream:
                total += member.size
                count += 1
                if total > limits.max_unpacked:
                    raise UnsafeUploadError(f"the archive unpacks to more than {limits.max_unpacked} bytes")
                if count > 2 * limits.max_files + 100:  # files plus their folders
                    raise UnsafeUploadError(f"more than {limits.max_files} files in the archive")
    except tarfile.TarError as exc:
        raise UnsafeUploadError(f"not a readable tar archive: {exc}") from exc


def unpack(path: Path, folder: Path, limits: UnpackLimits) -> Unpacked:
    """Unpack the upload at ``path`` into the new folder ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=False)
    writer = _Writer(folder, limits)
    skipped: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            kind = "zip"
            _unpack_zip(path, writer, skipped)
        elif tarfile.is_tarfile(path):
            kind = "tar"
            _tar_within_limit(path, limits)
            _unpack_tar(path, writer, skipped)
        elif _is_dicom(path):
            kind = "dicom"
            with path.open("rb") as source:
                writer.write(path.name, source)
        else:
            raise UnsafeUploadError("the upload is neither a zip or tar archive nor a DICOM Part 10 file")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise UnsafeUploadError(f"the archive cannot be read: {exc}") from exc
    except UnsafeUploadError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not writer.files:
        shutil.rmtree(folder, ignore_errors=True)
        raise UnsafeUploadError("the upload holds no files")
    return Unpacked(files=tuple(writer.files), skipped=tuple(skipped), kind=kind)
