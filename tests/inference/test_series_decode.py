"""Compressed inputs: every transfer syntax a PACS commonly sends decodes to the right values (files
made by pydicom's encoders and by dcmtk), decoder fall-back works, and undecodable data is refused
naming the transfer syntax."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dicom_node.demo.phantom import Phantom, make_phantom, write_ct_series
from inference.errors import SeriesError
from inference.series import load_series
from inference.series_decode import decode_pixels, native_pixels, plugin_order
from tests.support.dicom_series import edit_files, oblique_orientation, recompress, transcode

SPACING = (0.8, 0.7, 2.5)
OBLIQUE = oblique_orientation(30, 30)


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(shape=(10, 32, 40), spacing=SPACING, seed=7)


@pytest.fixture(scope="module")
def reference(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The uncompressed series loaded: what every compressed copy must reproduce."""
    folder = tmp_path_factory.mktemp("reference")
    return load_series(write_ct_series(phantom, folder, orientation=OBLIQUE))


def _make(phantom: Phantom, folder: Path, how: str, signed: bool) -> list[Path]:
    rescale = (1.0, 0.0) if signed else (1.0, -1024.0)
    kind, _, arg = how.partition(":")
    if kind == "pydicom":
        return write_ct_series(phantom, folder, orientation=OBLIQUE, rescale=rescale, transfer_syntax=arg)
    paths = write_ct_series(phantom, folder, orientation=OBLIQUE, rescale=rescale)
    if kind == "j2k-lossy":
        return recompress(paths, JPEG2000, j2k_cr=[4])
    tool, *args = arg.split()
    return transcode(paths, tool, *args)


# (how the files are made, transfer syntax they must end up in, largest allowed mean HU error:
# 0 = lossless, every voxel exact)
CASES = [
    ("pydicom:" + RLELossless, RLELossless, 0),
    ("pydicom:" + JPEGLSLossless, JPEGLSLossless, 0),
    ("pydicom:" + JPEG2000Lossless, JPEG2000Lossless, 0),
    ("pydicom:" + DeflatedExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, 0),
    ("pydicom:" + ImplicitVRLittleEndian, ImplicitVRLittleEndian, 0),
    ("dcmtk:dcmcjpeg +e1", JPEGLosslessSV1, 0),
    ("dcmtk:dcmcjpeg +el", JPEGLossless, 0),
    ("dcmtk:dcmcjpls", JPEGLSLossless, 0),
    ("dcmtk:dcmcrle", RLELossless, 0),
    ("dcmtk:dcmconv +tb", ExplicitVRBigEndian, 0),
    ("j2k-lossy", JPEG2000, 30),
    ("dcmtk:dcmcjpeg +eb", JPEGBaseline8Bit, 30),  # dcmtk rescales to 8 bits (slope ~6): lossy
]


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize(("how", "syntax", "max_error"), CASES, ids=[c[0].split(":")[-1] for c in CASES])
def test_transfer_syntax_decodes_to_the_reference_volume(
    phantom: Phantom, reference: Any, tmp_path: Path, how: str, syntax: str, max_error: float, signed: bool
) -> None:
    paths = _make(phantom, tmp_path / "s", how, signed)
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID == syntax
    if max_error == 0:
        assert header.PixelRepresentation == int(signed)

    result = load_series(paths)

    geometry, expected = result.volume.geometry, reference.volume.geometry
    np.testing.assert_allclose(geometry.origin, expected.origin, atol=1e-6)
    np.testing.assert_allclose(geometry.direction, expected.direction, atol=1e-6)
    np.testing.assert_allclose(geometry.spacing, expected.spacing, atol=1e-6)
    if max_error == 0:
        np.testing.assert_array_equal(result.volume.array, reference.volume.array)
    else:  # lossy: close on average and strongly correlated (a sign or byte-order bug is neither)
        error = np.abs(result.volume.array - reference.volume.array)
        assert float(error.mean()) < max_error
        correlation = np.corrcoef(result.volume.array.ravel(), reference.volume.array.ravel())[0, 1]
        assert correlation > 0.99
    assert all("PixelData" not in h for h in result.headers)


def test_enhanced_jpeg_ls_decodes_all_frames(phantom: Phantom, reference: Any, tmp_path: Path) -> None:
    [path] = write_ct_series(
        phantom, tmp_path, orientation=OBLIQUE, enhanced=True, transfer_syntax=JPEGLSLossless
    )
    result = load_series([path])
    np.testing.assert_array_equal(result.volume.array, reference.volume.array)


def test_preferred_plugins_come_first() -> None:
    decoder = get_decoder(JPEGLSLossless)
    order = plugin_order(decoder)
    assert order[0] == "pyjpegls" and set(order) == set(decoder.available_plugins)
    assert plugin_order(get_decoder(RLELossless))[0] == "pylibjpeg"


def test_falls_back_when_the_preferred_plugin_fails(
    phantom: Phantom, reference: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_ct_series(phantom, tmp_path, orientation=OBLIQUE, transfer_syntax=JPEGLSLossless)
    real = Decoder.as_array
    tried: list[str] = []

    def first_plugin_broken(self: Decoder, src: Any, **kwargs: Any) -> Any:
        tried.append(kwargs.get("decoding_plugin", ""))
        if kwargs.get("decoding_plugin") == "pyjpegls":
            raise RuntimeError("simulated decoder bug")
        return real(self, src, **kwargs)

    monkeypatch.setattr(Decoder, "as_array", first_plugin_broken)
    result = load_series(paths)
    np.testing.assert_array_equal(result.volume.array, reference.volume.array)
    assert tried[:2] == ["pyjpegls", "gdcm"]


def test_corrupt_codestream_names_syntax_and_every_decoder(phantom: Phantom, tmp_path: Path) -> None:
    paths = write_ct_series(phantom, tmp_path, transfer_syntax=JPEGLSLossless)

    def corrupt(ds: pydicom.Dataset, _: int) -> None:
        ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 4])

    edit_files(paths[2:3], corrupt)
    with pytest.raises(SeriesError) as info:
        load_series(paths)
    message = str(info.value)
    assert str(paths[2]) in message
    assert "cannot decode pixel data in transfer syntax JPEG-LS Lossless Image Compression" in message
    for plugin in plugin_order(get_decoder(JPEGLSLossless)):
        assert f"{plugin}: " in message


def test_unsupported_transfer_syntax_is_named(phantom: Phantom, tmp_path: Path) -> None:
    paths = write_ct_series(phantom, tmp_path, transfer_syntax=RLELossless)

    def relabel(ds: pydicom.Dataset, _: int) -> None:
        ds.file_meta.TransferSyntaxUID = MPEG2MPML

    edit_files(paths[:1], relabel)
    with pytest.raises(
        SeriesError, match=r"transfer syntax MPEG2 Main Profile / Main Level .* not supported"
    ):
        load_series(paths)
    with pytest.raises(SeriesError, match=re.escape(str(paths[0]))):
        decode_pixels(pydicom.dcmread(paths[0]), paths[0])
    assert UID(MPEG2MPML).is_encapsulated


@pytest.mark.parametrize(
    ("bits_allocated", "bits_stored", "signed", "frames"),
    [
        (16, 12, False, 1),
        (16, 12, True, 1),
        (16, 16, True, 3),
        (8, 8, False, 2),
        (16, 10, True, 2),
        (32, 32, True, 1),
    ],
)
def test_native_fast_path_equals_pydicom(
    bits_allocated: int, bits_stored: int, signed: bool, frames: int
) -> None:
    """Our zero-copy view of native pixel data masks or sign-extends unused high bits exactly as pydicom."""
    rng = np.random.default_rng(bits_stored + frames)
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = 6, 5
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    raw = rng.integers(0, 256, size=6 * 5 * frames * bits_allocated // 8, dtype=np.uint8)  # junk high bits
    ds.PixelData = raw.tobytes()

    ours = native_pixels(ds, UID(ExplicitVRLittleEndian))
    assert ours is not None
    theirs, _ = get_decoder(ExplicitVRLittleEndian).as_array(ds)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_native_fast_path_leaves_short_data_to_pydicom(tmp_path: Path, phantom: Phantom) -> None:
    [path] = write_ct_series(phantom, tmp_path, enhanced=True)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:-10]
    assert native_pixels(ds, UID(ExplicitVRLittleEndian)) is None
    with pytest.raises(SeriesError, match="less than expected"):
        decode_pixels(ds, path)
