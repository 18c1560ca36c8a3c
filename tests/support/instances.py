"""Small DICOM instances and raw senders for receiver tests.

``make_ct`` builds a tiny CT image dataset; ``send_datasets`` sends datasets with pynetdicom, optionally
without pynetdicom's UID checks (to deliver the malformed UIDs a receiver must refuse);
``raw_associate`` opens an association over a plain socket for protocol-level tests.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.support.tools import dcmtk, free_port, peer_env, wait_for


def make_ct(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    rows: int = 16,
    columns: int = 16,
    seed: int = 0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **attributes: object,
) -> Dataset:
    """A small, valid CT Image Storage dataset with file meta (16-bit signed pixels)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Test^Receiver"
    ds.PatientID = "RCV001"
    ds.Modality = "CT"
    ds.SeriesDescription = "receiver test"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(-1024, 2000, size=(rows, columns), dtype=np.int16).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    return ds


SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"


def make_private_object(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_class_uid: str = SIEMENS_CSA_NON_IMAGE,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **attributes: object,
) -> Dataset:
    """A vendor object of a private SOP class (no pixel data; a private block as Siemens writes its
    CSA headers), with file meta."""
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Test^Receiver"
    ds.PatientID = "RCV001"
    ds.Modality = "CT"
    ds.SeriesDescription = "PhoenixZIPReport"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    block = ds.private_block(0x0029, "SIEMENS CSA NON-IMAGE", create=True)
    block.add_new(0x08, "CS", "PHOENIX")
    block.add_new(0x20, "OB", bytes(range(256)) * 4)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    return ds


def write_series(out_dir: Path, count: int, **kwargs: object) -> list[Path]:
    """``count`` CT files of one series in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    study = str(kwargs.pop("study_uid", None) or generate_uid())
    series = str(kwargs.pop("series_uid", None) or generate_uid())
    paths = []
    for i in range(count):
        ds = make_ct(study_uid=study, series_uid=series, seed=i, InstanceNumber=i + 1, **kwargs)  # type: ignore[arg-type]
        path = out_dir / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dataset_bytes(path: Path) -> bytes:
    """The data set of a Part 10 file as stored (the bytes after the file meta group)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM", f"{path} is not a Part 10 file"
    # (0002,0000) UL group length: tag 4 + VR 2 + length 2 + value 4, right after the prefix
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


@contextlib.contextmanager
def uid_checks_relaxed() -> Iterator[None]:
    """Let pynetdicom send non-conformant UIDs (it still needs 1-64 characters)."""
    old = _config.ENFORCE_UID_CONFORMANCE
    _config.ENFORCE_UID_CONFORMANCE = False
    try:
        yield
    finally:
        _config.ENFORCE_UID_CONFORMANCE = old


def send_datasets(
    port: int,
    datasets: Sequence[Dataset],
    *,
    called_ae: str = "NNUNET",
    calling_ae: str = "TESTSCU",
    host: str = "127.0.0.1",
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Dataset | None]:
    """Send datasets over one association; returns each response status dataset (None if none)."""
    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, transfer_syntax)
    assoc = ae.associate(host, port, ae_title=called_ae)
    assert assoc.is_established, "association not established"
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def echo(port: int, *, called_ae: str = "NNUNET", host: str = "127.0.0.1") -> int | None:
    """C-ECHO status, or None if no association."""
    ae = AE(ae_title="ECHOTEST")
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return None
    try:
        rsp = assoc.send_c_echo()
        return int(rsp.Status) if "Status" in rsp else None
    finally:
        assoc.release()


# ------------------------------------------------------------------------------- raw protocol


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def associate_rq_pdu(called_ae: str, calling_ae: str, *, max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification with Implicit VR Little Endian."""
    body = struct.pack(">HH", 1, 0)
    body += called_ae.encode().ljust(16) + calling_ae.encode().ljust(16) + b"\x00" * 32
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    context = struct.pack(">BBBB", 1, 0, 0, 0)
    context += _item(0x30, b"1.2.840.10008.1.1") + _item(0x40, b"1.2.840.10008.1.2")
    body += _item(0x20, context)
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.9999.1")
    body += _item(0x50, user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def recv_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """Read one PDU: (type, body). Type 0 means the connection was closed."""
    header = _recv_exact(sock, 6)
    if len(header) < 6:
        return 0, b""
    pdu_type, _, length = struct.unpack(">BBI", header)
    return pdu_type, _recv_exact(sock, length)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def raw_associate(port: int, called_ae: str = "NNUNET", calling_ae: str = "RAWSCU") -> socket.socket:
    """A plain socket with an established association (Verification context id 1)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(associate_rq_pdu(called_ae, calling_ae))
    pdu_type, _ = recv_pdu(sock)
    assert pdu_type == 0x02, f"expected A-ASSOCIATE-AC, got PDU type {pdu_type}"
    return sock


# ------------------------------------------------------------------------------- dcmtk peers


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def dcmtk_storescp(out_dir: Path, *options: str, ae_title: str = "STORESCP") -> Iterator[int]:
    """Run dcmtk storescp (TCP_NODELAY=1) writing to ``out_dir``; yields its port once it answers a
    C-ECHO. A port taken by someone else between choosing and binding it is retried with another."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir.parent / f"{out_dir.name}.storescp.log"
    for _attempt in range(3):
        port = free_port()
        cmd = [dcmtk("storescp"), "-aet", ae_title, "-od", str(out_dir), *options, str(port)]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(cmd, env=peer_env(), stdout=log, stderr=log)
        try:
            wait_for(
                lambda p=proc, n=port: p.poll() is not None or _listening(n), timeout=20, what="storescp"
            )
            if proc.poll() is None and echo(port, called_ae=ae_title) == 0 and proc.poll() is None:
                yield port
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    raise RuntimeError(f"storescp did not start: {log_path.read_text(errors='replace')[-2000:]}")
