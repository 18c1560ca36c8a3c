"""Header parsing: the whole header before the pixel data, from any accepted encoding, bounded for deflate."""

from __future__ import annotations

import io
import tracemalloc
import zlib
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.errors import InvalidUIDError, MissingAttributeError, UnreadableDatasetError
from dicom_node.storage.header import InstanceHeader, read_header, read_header_dataset, read_part10_layout
from tests.support.instances import dataset_bytes, make_ct

LIMIT = 1 << 30  # the node's inflated-size limit in these tests


def _parse(path: Path) -> InstanceHeader:
    with path.open("rb") as fp:
        layout = read_part10_layout(fp)
        return read_header(fp, layout.transfer_syntax, max_inflated_bytes=LIMIT)


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_reads_the_wanted_attributes(tmp_path: Path, syntax: str) -> None:
    ds = make_ct(transfer_syntax=syntax, ImagesInAcquisition=42, SeriesDescription="Thorax  ")
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    header = _parse(path).validated()
    assert header == InstanceHeader(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        modality="CT",
        series_description="Thorax",
        expected_count=42,
    )


def test_layout_points_at_the_data_set(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    make_ct().save_as(path, enforce_file_format=True)
    with path.open("rb") as fp:
        layout = read_part10_layout(fp)
    assert path.read_bytes()[layout.dataset_offset :] == dataset_bytes(path)
    assert layout.transfer_syntax == ExplicitVRLittleEndian


def deeply_nested(depth: int) -> bytes:
    """(0040,A730) Content Sequence nested ``depth`` deep, undefined lengths (explicit VR LE)."""
    opening = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return opening * depth + closing * depth


def test_a_header_the_node_cannot_parse_is_refused_even_after_the_leading_attributes(
    tmp_path: Path,
) -> None:
    """The whole header is parsed, as routing and the worker will parse it: an unknown VR or
    sequences nested 5,000 deep after (0020,1002) are refused, not acknowledged to fail later."""
    ds = make_ct(ImagesInAcquisition=3)
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = dataset_bytes(path)
    assert read_header(io.BytesIO(data), ExplicitVRLittleEndian, max_inflated_bytes=LIMIT).expected_count == 3
    cut = data.index(b"\x20\x00\x02\x10")  # (0020,1002)
    end = cut + 8 + int.from_bytes(data[cut + 6 : cut + 8], "little")
    later = data.index(b"\x28\x00", end)  # the first element of group 0028, after (0020,1002)
    bad_vr = data[:later] + data[later : later + 4] + b"ZZ" + data[later + 6 :]
    with pytest.raises(UnreadableDatasetError, match="Value Representation"):
        read_header(io.BytesIO(bad_vr), ExplicitVRLittleEndian, max_inflated_bytes=LIMIT)
    with pytest.raises(UnreadableDatasetError, match="nested too deeply"):
        read_header(
            io.BytesIO(data[:end] + deeply_nested(5000)), ExplicitVRLittleEndian, max_inflated_bytes=LIMIT
        )
    shallow = read_header(
        io.BytesIO(data[:end] + deeply_nested(10)), ExplicitVRLittleEndian, max_inflated_bytes=LIMIT
    )
    assert shallow.expected_count == 3


def test_real_world_files() -> None:
    header = _parse(Path(get_testdata_file("MR_small_bigendian.dcm")))
    assert header.modality == "MR" and header.series_uid.startswith("1.3.6.1.4.1.5962")
    assert _parse(Path(get_testdata_file("image_dfl.dcm"))).validated().modality == "OT"


def test_missing_and_invalid_uids() -> None:
    with pytest.raises(MissingAttributeError, match="Series Instance UID"):
        InstanceHeader("1.2", "1.2.3", "1.2.3.4", "").validated()
    with pytest.raises(InvalidUIDError, match="SOP Instance UID"):
        InstanceHeader("1.2", "..", "1.2.3.4", "1.2.5").validated()


def test_deflate_bomb_is_inflated_only_up_to_the_limit() -> None:
    """A data set inflating to 256 MiB: the header read inflates at most 16 MiB of it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    # one private OB element (0009,0010) announcing 256 MiB of zeros, first of the data set
    bomb = compressor.compress(b"\x09\x00\x10\x00OB\x00\x00" + (256 << 20).to_bytes(4, "little"))
    zeros = b"\x00" * (1 << 20)
    for _ in range(256):
        bomb += compressor.compress(zeros)
    bomb += compressor.flush()
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableDatasetError, match=r"larger than \d+ bytes inflated"):
            read_header(io.BytesIO(bomb), DeflatedExplicitVRLittleEndian, max_inflated_bytes=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024


def test_unreadable() -> None:
    with pytest.raises(UnreadableDatasetError):
        read_part10_layout(io.BytesIO(b"plain text, not DICOM" * 20))
    with pytest.raises(UnreadableDatasetError, match="inflated"):
        read_header(io.BytesIO(b"\xff" * 100), DeflatedExplicitVRLittleEndian, max_inflated_bytes=LIMIT)


class _ReaderAtTheRecursionLimit(io.BytesIO):
    """A file whose ``read`` runs out of stack (as the receive fast path's prefix reader, Python code
    called deep in pydicom's recursion, can) once reading is ``at`` bytes in."""

    def __init__(self, data: bytes, at: int) -> None:
        super().__init__(data)
        self.at = at

    def read(self, size: int | None = -1) -> bytes:
        here = self.tell()
        if here >= self.at and self.getvalue()[here : here + 4] == b"\xfe\xff\x00\xe0":  # an item
            raise RecursionError("maximum recursion depth exceeded")
        return super().read(size)


def test_sequences_nested_too_deeply_are_named_so_wherever_the_recursion_limit_strikes() -> None:
    """pydicom turns any exception in the read of a sequence item into "No tag to read"; the
    refusal still says what is wrong."""
    start = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
    data = start + deeply_nested(50)
    with pytest.raises(UnreadableDatasetError, match="nested too deeply"):
        read_header_dataset(_ReaderAtTheRecursionLimit(data, len(start) + 20 * 30), ExplicitVRLittleEndian)
