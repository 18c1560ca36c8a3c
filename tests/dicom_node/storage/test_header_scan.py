"""The quick header walk against pydicom's full parse: wherever the walk vouches for a header, pydicom
reads the same InstanceHeader from it; whatever pydicom refuses, read_header refuses."""

from __future__ import annotations

import io
import random
import struct
import warnings
from pathlib import Path

import pytest
from pydicom import config
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.errors import UnreadableDatasetError
from dicom_node.storage import header as header_module
from dicom_node.storage.header import InstanceHeader, read_header, read_header_dataset, read_part10_layout
from dicom_node.storage.header_scan import MAX_NESTING, scan_header
from tests.dicom_node.storage.test_header import deeply_nested
from tests.support.instances import make_ct
from tests.support.node_setup import phantom_series

LIMIT = 1 << 30
LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def by_pydicom(data: bytes, syntax: str) -> InstanceHeader | None:
    """What the full pydicom parse reads (None: it refuses the header)."""
    try:
        ds = read_header_dataset(io.BytesIO(data), syntax, inflated_limit=LIMIT)
        return header_module._header_from_dataset(ds)
    except UnreadableDatasetError:
        return None


def by_scan(data: bytes, syntax: str) -> InstanceHeader | None:
    """What the walk reads (None: it is unsure and leaves the header to pydicom)."""
    implicit = syntax == ImplicitVRLittleEndian
    try:
        found = scan_header(io.BytesIO(data), implicit, header_module._WANTED)
        return header_module._header_from_scan(found, implicit)
    except Exception:  # Unsure, or a conversion that fails: read_header then asks pydicom
        return None


def read(data: bytes, syntax: str) -> InstanceHeader | None:
    try:
        return read_header(io.BytesIO(data), syntax, max_inflated_bytes=LIMIT)
    except UnreadableDatasetError:
        return None


def assert_agree(data: bytes, syntax: str) -> InstanceHeader | None:
    """The walk vouches only for what pydicom reads the same; read_header answers as pydicom does.
    Returns the walk's header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = by_pydicom(data, syntax)
        scanned = by_scan(data, syntax)
        answered = read(data, syntax)
    if scanned is not None:
        assert scanned == expected
    assert answered == expected
    return scanned


def dataset_of(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    layout = read_part10_layout(io.BytesIO(data))
    return data[layout.dataset_offset :], layout.transfer_syntax


def encoded(ds: Dataset, syntax: str) -> bytes:
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return dataset_of_bytes(out.getvalue())


def dataset_of_bytes(data: bytes) -> bytes:
    return data[read_part10_layout(io.BytesIO(data)).dataset_offset :]


def rich_ct(syntax: str) -> Dataset:
    """A CT with private elements (known and unknown creators), nested sequences and a charset."""
    ds = make_ct(
        transfer_syntax=syntax,
        ImagesInAcquisition=12,
        AcquisitionNumber=2,
        SpecificCharacterSet="ISO_IR 100",
        SeriesDescription="Thorax sp\u00e4t ",
    )
    ds.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x23, "DS", "12.5")
    ds.private_block(0x0029, "ACME 1.0", create=True).add_new(0x01, "OB", b"\x01\x02\x03")
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-D3000", "SRT", "Chest"
    ds.AnatomicRegionSequence = Sequence([code])
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"
    ref.PurposeOfReferenceCodeSequence = Sequence([code, Dataset()])
    ds.ReferencedImageSequence = Sequence([ref, Dataset()])
    ds.WindowCenter, ds.WindowWidth = [40, 400], [400, 1500]
    ds.add_new(0x00181160, "SH", "FILTER")
    ds.SmallestImagePixelValue, ds.LargestImagePixelValue = 0, 1000  # 'US or SS' in the dictionary
    icon = Dataset()  # pixel data in an item ('OB or OW' in the dictionary)
    icon.Rows, icon.Columns, icon.BitsAllocated, icon.BitsStored, icon.HighBit = 2, 2, 8, 8, 7
    icon.SamplesPerPixel, icon.PhotometricInterpretation, icon.PixelRepresentation = 1, "MONOCHROME2", 0
    icon.PixelData = bytes(range(4))
    ds.IconImageSequence = Sequence([icon])
    return ds


def pydicom_test_files() -> list[str]:
    return [f for f in get_testdata_files() if f.endswith(".dcm") or "." not in Path(f).name]


def test_every_pydicom_test_file_reads_alike() -> None:
    """Every little endian file pydicom ships that has a Part 10 layout: the walk agrees with pydicom,
    and it vouches for most of them (the quick path is taken, not always skipped)."""
    checked = vouched = 0
    for name in pydicom_test_files():
        try:
            data, syntax = dataset_of(Path(name))
        except (UnreadableDatasetError, OSError):
            continue
        if syntax not in LITTLE_ENDIAN:
            continue
        checked += 1
        vouched += assert_agree(data, syntax) is not None
    assert checked >= 40
    assert vouched >= 0.9 * checked, (vouched, checked)


@pytest.mark.parametrize("syntax", LITTLE_ENDIAN)
def test_the_projects_own_instances_are_read_by_the_walk(tmp_path: Path, syntax: str) -> None:
    files = phantom_series(tmp_path / "ct", slices=4, transfer_syntax=syntax)
    files += phantom_series(tmp_path / "enhanced", slices=4, transfer_syntax=syntax, enhanced=True)
    for path in files:
        data, found_syntax = dataset_of(path)
        assert assert_agree(data, found_syntax) is not None, path
    for ds in (make_ct(transfer_syntax=syntax, ImagesInAcquisition=3), rich_ct(syntax)):
        scanned = assert_agree(encoded(ds, syntax), syntax)
        assert scanned is not None
        assert scanned.series_description == str(ds.SeriesDescription).strip()
        assert scanned.expected_count == ds.ImagesInAcquisition


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def implicit_element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def hostile_headers(syntax: str) -> dict[str, bytes]:
    """Headers pydicom refuses, each damaged after the UIDs and (0020,1002)."""
    base = encoded(make_ct(transfer_syntax=syntax, ImagesInAcquisition=3), syntax)
    cut = base.index(b"\x28\x00\x02\x00")  # (0028,0002) Samples per Pixel, after the UIDs
    head, tail = base[:cut], base[cut:]
    explicit = syntax == ExplicitVRLittleEndian
    odd = b"\x01\x00\x00"
    odd_us = element(0x00280002, b"US", odd) if explicit else implicit_element(0x00280002, odd)
    # (0040,A730) Content Sequence announcing 16 bytes, where the data ends inside its first item's tag
    cut_item = b"\xfe\xff\x00\xe0\x08\x00"
    length = struct.pack("<L", 16)
    sequence = b"\x40\x00\x30\xa7" + (b"SQ\x00\x00" + length if explicit else length) + cut_item
    long = b"\xff\x7f\x00\x00"
    cases = {
        "odd-length US": head + odd_us + tail[10:],
        "truncated item": head + sequence,
        # the bytes left are fewer than announced, and odd: pydicom cannot read them as US
        "length past the end": head + tail[:4] + (b"US\xff\x7f" if explicit else long) + tail[8:41],
    }
    pixels = base.rindex(b"\xe0\x7f\x10\x00")
    if explicit:
        cases["corrupted VR"] = head + tail[:4] + b"ZZ" + tail[6:]
        cases["5,000-deep sequences"] = base[:pixels] + deeply_nested(5000) + base[pixels:]
    else:  # (0040,A730) Content Sequence without its VR
        deep = deeply_nested(5000).replace(b"\x40\x00\x30\xa7SQ\x00\x00", b"\x40\x00\x30\xa7")
        cases["5,000-deep sequences"] = base[:pixels] + deep + base[pixels:]
    return cases


@pytest.mark.parametrize("syntax", LITTLE_ENDIAN)
def test_hostile_headers_are_refused_by_both_paths(syntax: str) -> None:
    for name, data in hostile_headers(syntax).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert by_pydicom(data, syntax) is None, name
            assert by_scan(data, syntax) is None, name
            with pytest.raises(UnreadableDatasetError):
                read_header(io.BytesIO(data), syntax, max_inflated_bytes=LIMIT)


def test_nesting_beyond_the_walks_depth_is_left_to_pydicom() -> None:
    base = encoded(make_ct(ImagesInAcquisition=3), ExplicitVRLittleEndian)
    cut = base.rindex(b"\xe0\x7f\x10\x00")  # (0040,A730) goes before the pixel data
    within = base[:cut] + deeply_nested(MAX_NESTING) + base[cut:]
    beyond = base[:cut] + deeply_nested(MAX_NESTING + 1) + base[cut:]
    assert assert_agree(within, ExplicitVRLittleEndian) is not None
    assert by_scan(beyond, ExplicitVRLittleEndian) is None
    assert read(beyond, ExplicitVRLittleEndian) == read(within, ExplicitVRLittleEndian)


def damaged(base: bytes, rng: random.Random) -> bytes:
    """``base`` with one byte changed or one bit flipped, cut short, or a span repeated, within
    its header."""
    data = bytearray(base)
    pixels = base.find(b"\xe0\x7f\x10\x00")
    at = rng.randrange(pixels if pixels > 0 else len(base))
    kind = rng.randrange(4)
    if kind == 0:
        data[at] = rng.randrange(256)
    elif kind == 1:
        data[at] ^= 1 << rng.randrange(8)
    elif kind == 2:
        del data[at:]
    else:
        span = rng.randrange(1, 24)
        data[at:at] = data[at : at + span]
    return bytes(data)


@pytest.mark.parametrize("syntax", LITTLE_ENDIAN)
def test_damaged_headers_are_read_alike(syntax: str) -> None:
    """Thousands of damaged copies of a header with sequences, private elements (known and unknown
    creators), a character set and ambiguous VRs: the walk never vouches for one pydicom reads
    otherwise, and read_header always answers as pydicom does."""
    base = encoded(rich_ct(syntax), syntax)
    rng = random.Random(13)
    vouched = sum(assert_agree(damaged(base, rng), syntax) is not None for _ in range(1000))
    assert vouched > 300  # most changes land in values the walk accepts


@pytest.mark.parametrize(
    "name", ["MR_small_implicit.dcm", "test-SR.dcm", "rtplan.dcm", "nested_priv_SQ.dcm", "waveform_ecg.dcm"]
)
def test_damaged_real_headers_are_read_alike(name: str) -> None:
    data, syntax = dataset_of(Path(get_testdata_file(name)))
    rng = random.Random(name)
    for _ in range(300):
        assert_agree(damaged(data, rng), syntax)


def test_the_walk_steps_aside_when_pydicom_is_set_to_refuse_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """With pydicom set to raise on invalid values, a Series Number of 'many' is refused, as pydicom
    refuses it."""
    data = encoded(make_ct(ImagesInAcquisition=3), ExplicitVRLittleEndian)
    at = data.index(b"\x20\x00\x11\x00IS\x02\x001 ")  # (0020,0011) Series Number
    bad = data[:at] + b"\x20\x00\x11\x00IS\x04\x00many" + data[at + 10 :]
    assert read(bad, ExplicitVRLittleEndian) is not None  # read as text by default
    monkeypatch.setattr(config.settings, "_reading_validation_mode", config.RAISE)
    assert by_scan(bad, ExplicitVRLittleEndian) is not None  # the walk alone would vouch for it
    assert read(bad, ExplicitVRLittleEndian) is None
