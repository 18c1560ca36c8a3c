"""Hostile and ordinary archives for upload tests: zip/tar slip, links, decompression bombs."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path


def zip_of(files: Sequence[Path], *, folder: str = "series") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, arcname=f"{folder}/{path.parent.name}/{path.name}")
    return buf.getvalue()


def tar_of(files: Sequence[Path], *, mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as archive:  # type: ignore[call-overload]
        for path in files:
            archive.add(path, arcname=f"series/{path.name}")
    return buf.getvalue()


def zip_with_member(name: str, data: bytes = b"x" * 200) -> bytes:
    """A zip whose one member has ``name`` as given (``../evil``, ``/etc/x``...)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def zip_with_symlink(name: str = "series/link", target: str = "/etc/passwd") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buf.getvalue()


def tar_with_link(*, hard: bool = False, name: str = "series/link", target: str = "/etc/passwd") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        info.linkname = target
        archive.addfile(info)
    return buf.getvalue()


def tar_with_member(name: str, data: bytes = b"x" * 200) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bomb(size: int = 64 * 1024 * 1024) -> bytes:
    """One member of ``size`` zero bytes, deflated to a few tens of kilobytes (ratio ~1000:1)."""
    buf = io.BytesIO()
    info = zipfile.ZipInfo("series/bomb.dcm")
    info.compress_type = zipfile.ZIP_DEFLATED
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open(info, "w", force_zip64=True) as member,
    ):
        chunk = b"\0" * (1024 * 1024)
        for _ in range(size // len(chunk)):
            member.write(chunk)
    return buf.getvalue()


def gzip_tar_bomb(size: int = 64 * 1024 * 1024) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as archive:
        info = tarfile.TarInfo("series/bomb.dcm")
        info.size = size

        class Zeros(io.RawIOBase):
            def __init__(self) -> None:
                self.left = size

            def readable(self) -> bool:
                return True

            def readinto(self, b: bytearray) -> int:  # type: ignore[override]
                n = min(len(b), self.left)
                b[:n] = b"\0" * n
                self.left -= n
                return n

        archive.addfile(info, io.BufferedReader(Zeros()))
    return buf.getvalue()
