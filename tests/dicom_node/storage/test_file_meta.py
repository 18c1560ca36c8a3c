"""The sender's stdlib meta reader says what pydicom's reader says, for pydicom's own test files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicom_node.errors import UnreadableDatasetError
from dicom_node.storage.file_meta import NotPart10Error, read_file_meta
from dicom_node.storage.header import read_part10_layout
from tests.support.instances import make_private_object

TEST_FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",  # deflated
    "rtplan.dcm",  # implicit VR
]


@pytest.mark.parametrize("name", TEST_FILES)
def test_meta_reader_agrees_with_pydicom(name: str) -> None:
    path = Path(get_testdata_file(name))
    ours = read_file_meta(path)
    with path.open("rb") as fp:
        theirs = read_part10_layout(fp)
    assert ours.dataset_offset == theirs.dataset_offset
    assert ours.transfer_syntax == theirs.transfer_syntax
    assert ours.sop_class == theirs.file_meta.MediaStorageSOPClassUID
    assert ours.sop_instance == theirs.file_meta.MediaStorageSOPInstanceUID


def test_a_meta_group_longer_than_the_first_read_is_read_whole(tmp_path: Path) -> None:
    ds = make_private_object()
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3"
    ds.file_meta.PrivateInformation = b"x" * 9000  # (0002,0102) OB: the meta group runs past 4 kB
    path = tmp_path / "long-meta.dcm"
    ds.save_as(path, enforce_file_format=True)
    with path.open("rb") as fp:
        theirs = read_part10_layout(fp)
    ours = read_file_meta(path)
    assert ours.dataset_offset == theirs.dataset_offset > 9000
    assert ours.sop_instance == ds.SOPInstanceUID


def test_files_that_are_not_part10_or_are_cut_inside_the_meta_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("plain text, not DICOM" * 20)
    with pytest.raises(NotPart10Error):
        read_file_meta(text)
    whole = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[:160])  # inside the meta group
    with pytest.raises(UnreadableDatasetError, match="file meta"):
        read_file_meta(cut)
