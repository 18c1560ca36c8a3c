"""``dicom-node send`` against dcmtk ``storescu`` on the same folder, in one run.

Writes one CT series (default 300 instances of 512 x 512 16-bit, explicit VR little endian; ``--size 64``
for small instances, where per-message overhead dominates) to a temporary folder and sends the folder,
alternately, with

- dcmtk ``storescu`` (``TCP_NODELAY=1``, ``+sd`` scan the folder, ``-R`` propose only the contexts the
  files need), and
- ``dicom-node send FOLDER --to AE@HOST:PORT`` (a fresh process, like storescu),

to one dcmtk ``storescp`` (``TCP_NODELAY=1``, ``--ignore``: received data sets are not written, so the
receiver's disk is not what is measured). The clock runs from starting the sender to its exit (process
start and association set-up included). Each sender first runs once untimed (files in the page cache;
Python's bytecode cache written, as an installed package has it: ``PYTHONDONTWRITEBYTECODE`` is
dropped from the senders' environment), then ``--repeats`` times, interleaved; medians of the runs that
stored every file are printed as instances/s and the ratio of ``dicom-node send`` time to storescu
time, with the number of incomplete runs.

    .venv/bin/python benchmarks/bench_send.py [--count 300] [--size 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
DICOM_NODE = str(Path(sys.executable).parent / "dicom-node")


def peer_env() -> dict[str, str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_series(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    study, series = generate_uid(), generate_uid()
    for i in range(count):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientName = "Bench^Send"
        ds.PatientID = "BENCH"
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = rng.integers(-1024, 2000, size=(size, size), dtype=np.int16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(folder / f"ct{i:04d}.dcm", enforce_file_format=True)


def timed(cmd: list[str]) -> float | None:
    """Seconds from start to exit, or None (and what it said) when not every file was stored."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=peer_env(), capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        print(
            f"{Path(cmd[0]).name} failed ({proc.returncode}): {proc.stdout.strip()[-300:]}", file=sys.stderr
        )
        return None
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-send-"))
    try:
        folder = work / "series"
        write_series(folder, args.count, args.size)
        port = free_port()
        scp = subprocess.Popen(
            [STORESCP, "--ignore", "-aet", "STORESCP", str(port)],
            env=peer_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            senders = {
                "dcmtk storescu": [
                    STORESCU,
                    "-aec",
                    "STORESCP",
                    "+sd",
                    "-R",
                    "127.0.0.1",
                    str(port),
                    str(folder),
                ],
                "dicom-node send": [DICOM_NODE, "send", str(folder), "--to", f"STORESCP@127.0.0.1:{port}"],
            }
            times: dict[str, list[float]] = {name: [] for name in senders}
            failed: dict[str, int] = dict.fromkeys(senders, 0)
            for cmd in senders.values():  # warm-up, untimed
                timed(cmd)
            for _ in range(args.repeats):
                for name, cmd in senders.items():
                    seconds = timed(cmd)
                    if seconds is None:
                        failed[name] += 1
                    else:
                        times[name].append(seconds)
        finally:
            scp.terminate()
            scp.wait(10)
        base = statistics.median(times["dcmtk storescu"])
        print(f"{args.count} instances of {args.size}x{args.size} 16-bit, median of the complete runs")
        print(f"{'sender':<18} {'seconds':>8} {'inst/s':>8} {'time vs storescu':>17} {'incomplete runs':>16}")
        for name, values in times.items():
            t = statistics.median(values) if values else float("nan")
            incomplete = f"{failed[name]}/{args.repeats}"
            print(f"{name:<18} {t:8.2f} {args.count / t:8.1f} {t / base:17.2f} {incomplete:>16}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
