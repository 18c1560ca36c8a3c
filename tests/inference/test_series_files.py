"""Folders: which files count as DICOM, grouping by series for ``predict --input DIR``, and
load_series_dir (one series per folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from dicom_node.demo.phantom import Phantom, make_phantom, write_ct_series
from inference.errors import SeriesError
from inference.series import find_dicom_files, group_series_files, load_series_dir


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(shape=(6, 24, 24), spacing=(1.0, 1.0, 3.0), seed=2)


def _media_directory(path: Path) -> Path:
    """A minimal DICOMDIR-class file (Media Storage Directory Storage) under any name."""
    ds = Dataset()
    ds.FileSetID = "TEST"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _clutter(folder: Path) -> None:
    (folder / "README.txt").write_text("not dicom")
    (folder / "short").write_bytes(b"DICM")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.dcm").write_bytes(b"\0" * 128 + b"DICM")
    _media_directory(folder / "DICOMDIR")
    _media_directory(folder / "INDEX")


def test_find_dicom_files_recurses_and_skips_non_dicom_and_dicomdir(phantom: Phantom, tmp_path: Path) -> None:
    top = write_ct_series(phantom, tmp_path / "a", shuffle_names=True)
    nested = write_ct_series(phantom, tmp_path / "b" / "deeper")
    _clutter(tmp_path)
    found = find_dicom_files(tmp_path)
    assert set(found) == set(top + nested)
    assert found == sorted(found)  # deterministic order


def test_find_dicom_files_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(SeriesError, match="not a folder"):
        find_dicom_files(tmp_path / "missing")


def test_group_series_files_by_series_uid(phantom: Phantom, tmp_path: Path) -> None:
    ct = write_ct_series(phantom, tmp_path / "x", series_uid="1.2.826.0.2.1", series_description="Abdomen")
    other = write_ct_series(phantom, tmp_path / "y", series_uid="1.2.826.0.2.2", series_number=7)
    _clutter(tmp_path)
    groups = group_series_files(tmp_path)
    assert list(groups) == ["1.2.826.0.2.1", "1.2.826.0.2.2"]
    assert sorted(groups["1.2.826.0.2.1"].paths) == sorted(ct)
    assert sorted(groups["1.2.826.0.2.2"].paths) == sorted(other)
    assert groups["1.2.826.0.2.1"].describe() == "series 1.2.826.0.2.1 (CT #1 'Abdomen', 6 file(s))"
    assert groups["1.2.826.0.2.2"].number == "7" and groups["1.2.826.0.2.2"].modality == "CT"


def test_load_series_dir_ignores_clutter(phantom: Phantom, tmp_path: Path) -> None:
    write_ct_series(phantom, tmp_path / "s", shuffle_names=True)
    _clutter(tmp_path)
    result = load_series_dir(tmp_path)
    np.testing.assert_array_equal(result.volume.array, phantom.image.astype(np.float32))


def test_load_series_dir_refuses_several_series_and_empty_folders(phantom: Phantom, tmp_path: Path) -> None:
    write_ct_series(phantom, tmp_path / "x", series_uid="1.2.826.0.2.3")
    write_ct_series(phantom, tmp_path / "y", series_uid="1.2.826.0.2.4")
    with pytest.raises(SeriesError, match=r"files of 2 series given.*1\.2\.826\.0\.2\.3.*1\.2\.826\.0\.2\.4"):
        load_series_dir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeriesError, match="no DICOM files found"):
        load_series_dir(tmp_path / "empty")


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_broken_dicom_file_in_folder_is_named(phantom: Phantom, tmp_path: Path) -> None:
    write_ct_series(phantom, tmp_path)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    assert broken in find_dicom_files(tmp_path)  # kept, so that loading names it
    with pytest.raises(SeriesError, match=r"broken\.dcm"):
        group_series_files(tmp_path)
    with pytest.raises(SeriesError, match=r"broken\.dcm"):
        load_series_dir(tmp_path)
