"""Unpacking uploads: ordinary archives unpack to numbered files; every hostile archive is refused with
the member named, and nothing lands outside the target folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dicom_node.http.uploads import UnpackLimits, UnsafeUploadError, unpack
from tests.support import archives
from tests.support.node_setup import phantom_series

LIMITS = UnpackLimits(max_files=100, max_unpacked=16 * 1024 * 1024, max_ratio=200.0)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return phantom_series(tmp_path_factory.mktemp("ct"), slices=4)


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar"])
def test_an_archive_of_a_series_unpacks_to_its_files_byte_for_byte(
    tmp_path: Path, series: list[Path], kind: str
) -> None:
    data = (
        archives.zip_of(series)
        if kind == "zip"
        else archives.tar_of(series, mode="w:gz" if kind == "tar.gz" else "w")
    )
    result = unpack(_write(tmp_path, data), tmp_path / "out", LIMITS)
    assert sorted(p.read_bytes() for p in result.files) == sorted(p.read_bytes() for p in series)
    assert all(p.parent == tmp_path / "out" for p in result.files)


def test_a_bare_dicom_file_is_accepted_as_a_one_file_upload(tmp_path: Path, series: list[Path]) -> None:
    result = unpack(_write(tmp_path, series[0].read_bytes()), tmp_path / "out", LIMITS)
    assert result.kind == "dicom" and [p.read_bytes() for p in result.files] == [series[0].read_bytes()]


@pytest.mark.parametrize(
    ("data", "why"),  # built lazily: the bombs take a moment
    [
        (lambda: archives.zip_with_member("../../evil.dcm"), "'..'"),
        (lambda: archives.zip_with_member("/tmp/evil.dcm"), "absolute"),
        (lambda: archives.zip_with_member("C:/evil.dcm"), "absolute"),
        (lambda: archives.tar_with_member("../evil.dcm"), "'..'"),
        (lambda: archives.tar_with_member("/tmp/evil.dcm"), "absolute"),
        (archives.zip_with_symlink, "symbolic link"),
        (archives.tar_with_link, "a link"),
        (lambda: archives.tar_with_link(hard=True), "a link"),
        (lambda: archives.zip_bomb(8 * 1024 * 1024), "decompression bomb"),
        (archives.zip_bomb, "declares"),
        (archives.gzip_tar_bomb, "more than"),
        (lambda: b"just some text, not an archive" * 20, "neither"),
    ],
    ids=[
        "zip-slip",
        "zip-absolute",
        "zip-drive",
        "tar-slip",
        "tar-absolute",
        "zip-symlink",
        "tar-symlink",
        "tar-hardlink",
        "zip-bomb",
        "zip-too-big",
        "tar-gz-bomb",
        "not-an-archive",
    ],
)
def test_a_hostile_upload_is_refused_and_leaves_nothing(
    tmp_path: Path, data: Callable[[], bytes], why: str
) -> None:
    out = tmp_path / "box" / "out"
    out.parent.mkdir()
    with pytest.raises(UnsafeUploadError, match=why):
        unpack(_write(tmp_path, data()), out, LIMITS)
    assert not out.exists()
    assert list((tmp_path / "box").iterdir()) == []
    assert not (tmp_path / "evil.dcm").exists()


def test_more_files_than_allowed_are_refused(tmp_path: Path, series: list[Path]) -> None:
    with pytest.raises(UnsafeUploadError, match="more than 3 files"):
        unpack(_write(tmp_path, archives.zip_of(series)), tmp_path / "out", UnpackLimits(max_files=3))
