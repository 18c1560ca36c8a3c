"""Group commit of folder fsyncs: callers arriving during an fsync share the next one; nobody returns
before an fsync that began after its call has finished."""

from __future__ import annotations

import threading
from pathlib import Path

from dicom_node.storage.dir_sync import DirSyncer
from tests.support.tools import wait_for


class GatedFsync:
    """A fake folder fsync that records when each run starts and blocks until released."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.gates: list[threading.Event] = []
        self.fail_next = False
        self._lock = threading.Lock()

    def __call__(self, folder: Path) -> None:
        gate = threading.Event()
        with self._lock:
            self.started.append(len(self.started))
            self.gates.append(gate)
        assert gate.wait(30), "test never released the fsync"
        if self.fail_next:
            self.fail_next = False
            raise OSError("EIO")

    def release(self, index: int) -> None:
        wait_for(lambda: len(self.gates) > index, timeout=10, what=f"fsync {index} to start")
        self.gates[index].set()


def test_sequential_calls_each_get_their_own_fsync(tmp_path: Path) -> None:
    calls: list[Path] = []
    syncer = DirSyncer(calls.append)
    syncer.sync(tmp_path)
    syncer.sync(tmp_path)
    assert calls == [tmp_path, tmp_path]


def test_callers_arriving_during_an_fsync_share_the_next_one(tmp_path: Path) -> None:
    fsync = GatedFsync()
    syncer = DirSyncer(fsync)
    returned: list[tuple[str, int]] = []

    def call(name: str) -> None:
        syncer.sync(tmp_path)
        returned.append((name, len(fsync.started)))

    first = threading.Thread(target=call, args=("first",))
    first.start()
    wait_for(lambda: fsync.started, timeout=10, what="the first fsync")
    later = [threading.Thread(target=call, args=(f"later{i}",)) for i in range(3)]
    for t in later:
        t.start()
    wait_for(lambda: syncer.requests == 4, timeout=10, what="all four callers")
    fsync.release(0)
    first.join(10)
    # the first fsync began before the later callers' renames: it does not cover them
    assert [name for name, _ in returned] == ["first"]
    fsync.release(1)
    for t in later:
        t.join(10)
    assert len(returned) == 4
    assert syncer.fsyncs == 2  # four callers, two fsyncs
    assert all(started == 2 for name, started in returned if name != "first")


def test_a_failed_fsync_raises_in_its_caller_and_the_others_run_another(tmp_path: Path) -> None:
    fsync = GatedFsync()
    syncer = DirSyncer(fsync)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            syncer.sync(tmp_path)
        except OSError as exc:
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    wait_for(lambda: fsync.started, timeout=10, what="the first fsync")
    second = threading.Thread(target=call)
    second.start()
    wait_for(lambda: syncer.requests == 2, timeout=10, what="the second caller")
    fsync.fail_next = True
    fsync.release(0)
    first.join(10)
    fsync.release(1)
    second.join(10)
    assert len(errors) == 1 and syncer.fsyncs == 1  # the failed one is not counted
