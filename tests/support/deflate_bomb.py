"""A deflate bomb: a Part 10 file in Deflated Explicit VR Little Endian whose data set (a real CT
header, then Pixel Data of zeros) is about a thousand times larger inflated than on disk."""

from __future__ import annotations

import zlib
from pathlib import Path

from pydicom import dcmread
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from dicom_node.storage.header import read_part10_layout


def write_deflate_bomb(template: Path, out: Path, inflated_bytes: int) -> Path:
    """``template``'s header (an explicit VR little endian file; its pixel data dropped) followed by
    ``inflated_bytes`` of OB zeros as Pixel Data, deflated, as ``out``."""
    data = template.read_bytes()
    with template.open("rb") as fp:
        layout = read_part10_layout(fp)
    assert layout.transfer_syntax == ExplicitVRLittleEndian
    header = data[layout.dataset_offset : data.rindex(b"\xe0\x7f\x10\x00")]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(header)
    body += compressor.compress(b"\xe0\x7f\x10\x00OB\x00\x00" + inflated_bytes.to_bytes(4, "little"))
    zeros = b"\x00" * (1 << 20)
    for _ in range(inflated_bytes >> 20):
        body += compressor.compress(zeros)
    body += compressor.flush()
    meta = dcmread(template, stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    with out.open("wb") as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.write(body)
    return out
