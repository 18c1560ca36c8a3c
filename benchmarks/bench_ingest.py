"""Ingest rate of the node's receiver against dcmtk storescp, for the same series in one run.

Writes one CT series (default 300 instances of 512 x 512 16-bit, ~525 kB each, explicit VR little
endian) to a temporary folder, then sends it with dcmtk ``storescu`` (``TCP_NODELAY=1``, one
association) to:

- dcmtk ``storescp`` (``TCP_NODELAY=1``, default options, writing to a temporary folder);
- a plain durable write loop (no network: write, fsync, rename, folder fsync per file), in one thread
  and in 4 (what the disk gives to parallel fsyncs);
- the node's receiver (:class:`dicom_node.net.scp_server.ScpServer` with a full ``Receiver``: spool +
  journal, the receive fast path writing each data set into the spool as it arrives), with fsync on
  (the default) and off, over 1 and 4 associations (4 storescu processes, a quarter of the series
  each), with ``node.receive_processes: 2`` (4 associations), and with the fast path off (pynetdicom
  as shipped).

It also times the handler's own work without the network ("handler only": header parse, spool write,
journal row per instance), and prints the goal ratios of issue 13 and the load average.

Each configuration runs ``--repeats`` times (interleaved); the median is reported as instances/s and
as the ratio to storescp. The clock runs from starting storescu to its exit, association set-up included.
Every run checks that all instances were acknowledged (storescu exit code) and, for the node, journaled.
``--profile`` prints where the node's threads spend their time (cProfile in every thread).

    .venv/bin/python benchmarks/bench_ingest.py [--count 300] [--size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from thread_profile import ThreadProfiler  # benchmarks/, the script's folder

from dicom_node.config import NodeSection
from dicom_node.net import fastpath
from dicom_node.net.receive import Receiver
from dicom_node.net.receive_child import lock_dir
from dicom_node.net.receive_processes import ReceiveProcesses
from dicom_node.net.scp_server import ScpServer
from dicom_node.process import configure_process
from dicom_node.storage.filing import Spool
from dicom_node.storage.header import read_header, read_part10_layout
from dicom_node.storage.ingest import Ingestor, Origin
from dicom_node.storage.journal import Journal
from dicom_node.storage.series_locks import SeriesLocks

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
NODE_CPU_MS: list[float] = []  # CPU ms per instance of the last node run (benchmark bookkeeping)
SENDER_CPU_MS: list[float] = []  # storescu's CPU ms per instance in the last node run
LOOP_WRITE_S: list[float] = []  # seconds the last one-thread durable loop spent in write() (not fsync)


def peer_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_series(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientName = "Bench^Ingest"
        ds.PatientID = "BENCH"
        ds.Modality = "CT"
        ds.SeriesDescription = "ingest benchmark"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagesInAcquisition = count
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = rng.integers(-1024, 2000, size=(size, size), dtype=np.int16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def clear(folder: Path) -> None:
    """Remove the previous run's output and flush the disk before the next clock starts: the
    deletes and the dirty pages of earlier runs would otherwise be paid for inside the next run's
    fsyncs."""
    shutil.rmtree(folder, ignore_errors=True)
    os.sync()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def send(port: int, files: list[Path], called: str, associations: int = 1) -> float:
    """storescu all files, split over ``associations`` storescu processes sending at once (one
    association each); returns seconds until the last one exits."""
    shares = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [STORESCU, "-aec", called, "127.0.0.1", str(port), *map(str, share)],
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    outputs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - start
    for proc, (_, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed ({proc.returncode}): {err[-2000:]}")
    return elapsed


def _durable_write(data: bytes, tmp: Path, final: Path) -> float:
    """What the spool does per instance: write to a temp file, fsync, rename, fsync the folder.
    Returns the seconds spent creating and writing the file (before its fsync)."""
    start = time.perf_counter()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        written = time.perf_counter() - start
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    dfd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return written


def run_durable_loop(files: list[Path], work: Path, threads: int = 1) -> float:
    """The floor for durable filing without a network: each file's bytes written durably into one
    folder (:func:`_durable_write`), in ``threads`` threads at once (a share of the files each: how
    many durable writes per second the disk takes when they come in parallel)."""
    out = work / "durable"
    clear(out)
    (out / "tmp").mkdir(parents=True)
    (out / "files").mkdir()
    datas = [p.read_bytes() for p in files]

    write_s = [0.0] * threads

    def share(k: int) -> None:
        for i in range(k, len(datas), threads):
            write_s[k] += _durable_write(datas[i], out / "tmp" / f"{i}.part", out / "files" / f"{i}.dcm")

    workers = [threading.Thread(target=share, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if threads == 1:
        LOOP_WRITE_S.append(write_s[0])
    return elapsed


def run_storescp(files: list[Path], work: Path) -> float:
    out = work / "storescp"
    clear(out)
    out.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(
        [STORESCP, "-aet", "STORESCP", "-od", str(out), str(port)],
        env=peer_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("storescp did not start")
            time.sleep(0.05)
        elapsed = send(port, files, "STORESCP")
        received = len(list(out.iterdir()))
        if received != len(files):
            raise RuntimeError(f"storescp wrote {received} of {len(files)} files")
        return elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_node(
    files: list[Path],
    work: Path,
    *,
    fsync: bool,
    associations: int = 1,
    processes: int = 1,
    profiler: ThreadProfiler | None = None,
) -> float:
    """The node's receiver (``processes`` > 1: plus that many - 1 receive processes it hands
    connections to, as ``node.receive_processes`` runs them) receiving the files over
    ``associations``."""
    storage = work / "node"
    clear(storage)
    section = NodeSection(
        ae_title=["NNUNET"],
        host="127.0.0.1",
        port=0,
        storage_dir=storage,
        fsync=fsync,
        min_free_disk_mb=100,
        receive_processes=processes,
    )
    journal = Journal(storage / "journal.sqlite")
    spool = Spool(storage, fsync=fsync, min_free_bytes=section.min_free_disk_mb * 1024 * 1024)
    locks = SeriesLocks(lock_dir=lock_dir(storage) if processes > 1 else None)
    receiver = Receiver(Ingestor(spool, journal, locks=locks), ae_titles=section.ae_title)
    server = ScpServer(section, receiver).start()
    others = None
    if processes > 1:
        others = ReceiveProcesses(section, server, on_instance=lambda _: None, on_released=lambda _: None)
        others.start(grace_seconds=5)
    try:
        if profiler is not None:
            with profiler:
                elapsed = send(server.port, files, "NNUNET", associations)
        else:
            cpu = time.process_time()
            children = _children_cpu()
            elapsed = send(server.port, files, "NNUNET", associations)
            # this process is the node: its CPU time per instance is steadier than the rate on a
            # loaded machine (the other receive processes' CPU is not counted)
            if processes == 1:
                NODE_CPU_MS.append(1000 * (time.process_time() - cpu) / len(files))
                SENDER_CPU_MS.append(1000 * (_children_cpu() - children) / len(files))
        recorded = journal.counts().instances
        if recorded != len(files):
            raise RuntimeError(f"node journaled {recorded} of {len(files)} instances")
        return elapsed
    finally:
        if others is not None:
            others.stop(timeout=15)
        server.stop(grace_seconds=5)
        journal.close()


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the storescu senders)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_handler_only(files: list[Path], work: Path, *, fsync: bool) -> float:
    """What the C-STORE handler does per instance (header parse, spool write, journal), without
    the network: the data sets are split from their files before the clock starts."""
    storage = work / "handler"
    clear(storage)
    journal = Journal(storage / "journal.sqlite")
    ingestor = Ingestor(Spool(storage, fsync=fsync, min_free_bytes=100 * 1024 * 1024), journal)
    origin = Origin("NNUNET", "STORESCU", "bench")
    datasets = []
    for path in files:
        data = path.read_bytes()
        layout = read_part10_layout(io.BytesIO(data))
        datasets.append((layout.transfer_syntax, data[layout.dataset_offset :]))
    try:
        start = time.perf_counter()
        for syntax, data in datasets:
            header = read_header(
                io.BytesIO(data), syntax, max_inflated_bytes=ingestor.spool.max_dataset_bytes
            ).validated()
            ingestor.ingest(header, syntax, data, origin)
        return time.perf_counter() - start
    finally:
        journal.close()


def print_ceilings(
    *,
    storescp: float,
    loop: float,
    loop_write_s: float,
    node: float,
    node_cpu_ms: float,
    sender_cpu_ms: float,
    parallel_disk: float,
) -> None:
    """What any receiver could reach on this machine, from figures of this run.

    One association: the sender waits for each answer, and an answer may go only once the instance
    is durable, so every instance costs at least storescp's whole cycle (the sender's reads and
    sends, the receiver's reads and writes) plus the durable loop's fsyncs and rename (its time
    without the write). Several associations: each instance costs the node's CPU (as measured over
    one association) and the sender's, and this machine has ``os.cpu_count()`` cores for both."""
    cycle = 1 / storescp + max(0.0, 1 / loop - loop_write_s)
    one = 1 / cycle
    cores = os.cpu_count() or 1
    cpu_bound = 1000 * cores / (node_cpu_ms + sender_cpu_ms)
    print("ceilings on this machine, from the figures above:")
    print(
        f"  one association: storescp's cycle {1000 / storescp:.2f} ms + durable loop without its"
        f" write {1000 * (1 / loop - loop_write_s):.2f} ms = {1000 * cycle:.2f} ms per instance"
    )
    print(
        f"    -> at most {one:.0f}/s: {one / storescp:.2f} x storescp, {one / loop:.2f} x durable loop;"
        f" the node reaches {node / one:.2f} of it"
    )
    print(
        f"  parallel associations: {cores} cores / (node {node_cpu_ms:.2f} + storescu"
        f" {sender_cpu_ms:.2f} CPU ms per instance) -> at most {cpu_bound:.0f}/s,"
        f" {cpu_bound / node:.2f} x one association; the disk gives {parallel_disk:.2f} x"
        " to parallel fsyncs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one fsync-on node run")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder)")
    args = parser.parse_args()
    configure_process()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        files = write_series(work / "series", args.count, args.size)
        os.sync()
        mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"series: {len(files)} instances, {mb / len(files) * 1000:.0f} kB each, {mb:.0f} MB, in {work}")

        configs: dict[str, Callable[[], float]] = {
            "dcmtk storescp": lambda: run_storescp(files, work),
            "durable write loop": lambda: run_durable_loop(files, work),
            "durable write loop, 4 threads": lambda: run_durable_loop(files, work, threads=4),
            "node, fsync on": lambda: run_node(files, work, fsync=True),
            "node, fsync on, 4 assocs": lambda: run_node(files, work, fsync=True, associations=4),
            "node, 2 receive processes, 4 assocs": lambda: run_node(
                files, work, fsync=True, associations=4, processes=2
            ),
            "node, fsync off": lambda: run_node(files, work, fsync=False),
            "node, fsync off, 4 assocs": lambda: run_node(files, work, fsync=False, associations=4),
            "handler only, fsync on": lambda: run_handler_only(files, work, fsync=True),
            "handler only, fsync off": lambda: run_handler_only(files, work, fsync=False),
        }

        def shipped(fsync: bool) -> float:
            saved = fastpath.SUPPORTED_VERSIONS
            fastpath.SUPPORTED_VERSIONS = ()  # pynetdicom's own polling reactors and 4 KiB reads
            try:
                return run_node(files, work, fsync=fsync)
            finally:
                fastpath.SUPPORTED_VERSIONS = saved

        configs["node, fsync off, no fast path"] = lambda: shipped(False)

        times: dict[str, list[float]] = {name: [] for name in configs}
        cpu_ms: dict[str, list[float]] = {name: [] for name in configs}
        sender_ms: list[float] = []  # storescu's CPU per instance, one association to the node
        for _ in range(args.repeats):
            for name, run in configs.items():
                NODE_CPU_MS.clear()
                SENDER_CPU_MS.clear()
                times[name].append(run())
                cpu_ms[name].extend(NODE_CPU_MS)
                if name == "node, fsync on":
                    sender_ms.extend(SENDER_CPU_MS)

        base = len(files) / statistics.median(times["dcmtk storescp"])
        head = f"{'receiver':36s} {'inst/s':>8s} {'MB/s':>7s} {'vs storescp':>12s} {'CPU ms/inst':>12s}"
        print(f"{head}   runs (s)")
        for name, values in times.items():
            rate = len(files) / statistics.median(values)
            runs = " ".join(f"{v:.2f}" for v in values)
            cpu = f"{statistics.median(cpu_ms[name]):.2f}" if cpu_ms[name] else ""
            row = f"{name:36s} {rate:8.1f} {rate * mb / len(files):7.1f} {rate / base:12.2f} {cpu:>12s}"
            print(f"{row}   {runs}")

        def rate(name: str) -> float:
            return len(files) / statistics.median(times[name])

        print("\ngoals (issue 13), each a ratio of rates measured above in this run:")
        goals = [
            ("node fsync on / dcmtk storescp (goal >= 0.5)", rate("node, fsync on") / base, 0.5),
            (
                "node 4 assocs / 1 assoc, fsync on (goal >= 2)",
                rate("node, fsync on, 4 assocs") / rate("node, fsync on"),
                2.0,
            ),
            (
                "node fsync on / durable write loop (goal >= 0.8)",
                rate("node, fsync on") / rate("durable write loop"),
                0.8,
            ),
            (
                "node 4 assocs fsync on / durable write loop (goal >= 0.8)",
                rate("node, fsync on, 4 assocs") / rate("durable write loop"),
                0.8,
            ),
            (
                "node 2 receive processes, 4 assocs / 1 assoc (goal >= 2)",
                rate("node, 2 receive processes, 4 assocs") / rate("node, fsync on"),
                2.0,
            ),
        ]
        for label, value, goal in goals:
            print(f"  {label:58s} {value:6.2f}  {'met' if value >= goal else 'NOT met'}")
        print_ceilings(
            storescp=rate("dcmtk storescp"),
            loop=rate("durable write loop"),
            loop_write_s=statistics.median(LOOP_WRITE_S) / len(files),
            node=rate("node, fsync on"),
            node_cpu_ms=statistics.median(cpu_ms["node, fsync on"]),
            sender_cpu_ms=statistics.median(sender_ms),
            parallel_disk=rate("durable write loop, 4 threads") / rate("durable write loop"),
        )
        print(f"  load average during the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        if args.profile:
            profiler = ThreadProfiler()
            elapsed = run_node(files, work, fsync=True, profiler=profiler)
            print(f"\nprofiled run (fsync on): {len(files) / elapsed:.1f} inst/s (profiling slows it)\n")
            print(profiler.report())
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
