"""Storage SCP peers for tests: dcmtk ``storescp`` writing to a folder, and an in-process pynetdicom SCP
that records what it was offered and answers with scripted statuses."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from tests.support.tools import dcmtk, peer_env, wait_for
from tests.support.written_files import files_in, read_complete


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@contextmanager
def dcmtk_storescp(
    port: int, out_dir: Path, *, ae_title: str = "STORESCP", options: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A dcmtk storescp (TCP_NODELAY=1, one process per association) writing every received instance
    to ``out_dir``; stopped on exit. ``options`` go before the port (e.g. ``+tls KEY CERT``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir.parent / f"storescp-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [dcmtk("storescp"), "--fork", "+xa", "-aet", ae_title, "-od", str(out_dir), *options, str(port)],
        env=peer_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: proc.poll() is not None or port_open(port), timeout=15, what="storescp listening")
        if proc.poll() is not None:
            raise RuntimeError(f"storescp exited with {proc.returncode}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def stored_sop_uids(out_dir: Path) -> list[str]:
    """SOP Instance UIDs of the files in a storescp output folder (one entry per file), files
    storescp is still writing left out."""
    uids = []
    for path in files_in(out_dir):
        ds = read_complete(path, pixels=False)  # not every stored object has pixel data
        if ds is not None and "SOPInstanceUID" in ds:
            uids.append(str(ds.SOPInstanceUID))
    return uids


@dataclass
class RecordingSCP:
    """A pynetdicom storage SCP on ``port`` that answers each C-STORE with the next status of
    ``statuses`` (the last one repeats) and records associations, offered contexts and datasets."""

    port: int
    ae_title: str = "RECORDER"
    statuses: Sequence[int] = (0x0000,)
    associations: int = 0
    requested: list[list[tuple[str, list[str]]]] = field(default_factory=list)
    received: list[Dataset] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: object | None = None

    def __enter__(self) -> RecordingSCP:
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REQUESTED, self._on_requested)]
        self._ae = ae
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def __exit__(self, *exc: object) -> None:
        self._ae.shutdown()

    def _on_requested(self, event: evt.Event) -> None:
        offered = [
            (str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
            for cx in event.assoc.requestor.requested_contexts
        ]
        with self._lock:
            self.associations += 1
            self.requested.append(offered)

    def _on_store(self, event: evt.Event) -> int:
        with self._lock:
            status = self.statuses[min(len(self.received), len(self.statuses) - 1)]
            self.received.append(event.dataset)
        return status


@dataclass
class BlockingStoreSCP:
    """A storage SCP that files every instance as ``out_dir/<SOP Instance UID>.dcm`` (a later copy
    replaces the earlier one, as dcmtk storescp does) and holds its answer to the FIRST C-STORE until
    :attr:`release` is set: a slow destination, so a test can act while a send is in flight."""

    port: int
    out_dir: Path
    ae_title: str = "SLOWPACS"
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    stores: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> BlockingStoreSCP:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        self._ae = ae
        ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._ae.shutdown()

    def files(self) -> list[Path]:
        return sorted(self.out_dir.glob("*.dcm"))

    def _on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        ds.save_as(self.out_dir / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        with self._lock:
            self.stores += 1
            first = self.stores == 1
        if first:
            self.entered.set()
            self.release.wait(120)
        return 0x0000
