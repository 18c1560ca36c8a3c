"""SeriesLocks: filing holders share a series' lock, a purge excludes them, and a waiting purge is not
starved by new filings."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dicom_node.storage.series_locks import SeriesLocks

UID = "1.2.3.4"


def run(target: object) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def body() -> None:
        with target:  # type: ignore[attr-defined]
            done.set()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, done


def test_filings_share_the_lock() -> None:
    locks = SeriesLocks()
    with locks.filing(UID):
        _, done = run(locks.filing(UID))
        assert done.wait(5)


def test_a_purge_waits_for_filings_and_blocks_new_ones() -> None:
    locks = SeriesLocks(stripes=1)  # every series on one stripe: the worst case
    with locks.filing(UID):
        purge, purged = run(locks.purging(UID))
        assert not purged.wait(0.2)  # the filing is still running
        _, late_filed = run(locks.filing("9.9"))  # waits behind the waiting purge
        assert not late_filed.wait(0.2)
    assert purged.wait(5) and late_filed.wait(5)
    purge.join(5)


def test_filing_waits_for_a_running_purge() -> None:
    locks = SeriesLocks()
    with locks.purging(UID):
        _, filed = run(locks.filing(UID))
        assert not filed.wait(0.2)
    assert filed.wait(5)


def test_other_stripes_do_not_wait() -> None:
    locks = SeriesLocks(stripes=64)
    other = next(u for u in (f"1.2.{i}" for i in range(1000)) if locks._stripe(u) != locks._stripe(UID))
    with locks.purging(UID):
        _, filed = run(locks.filing(other))
        assert filed.wait(5)


def test_stripes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SeriesLocks(stripes=0)


def test_a_purge_in_another_process_holds_off_filing_here(tmp_path: Path) -> None:
    """With a lock folder (several receive processes), the stripes are file locks too."""
    lock_dir = tmp_path / "locks"
    code = (
        "import sys; from pathlib import Path; from dicom_node.storage.series_locks import SeriesLocks\n"
        "locks = SeriesLocks(lock_dir=Path(sys.argv[1]))\n"
        "with locks.purging(sys.argv[2]):\n"
        "    print('held', flush=True); sys.stdin.readline()\n"
    )
    purger = subprocess.Popen(
        [sys.executable, "-c", code, str(lock_dir), UID],
        cwd=Path(__file__).resolve().parents[3],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert purger.stdin is not None and purger.stdout is not None
    try:
        assert purger.stdout.readline().strip() == "held"
        locks = SeriesLocks(lock_dir=lock_dir)
        filing, entered = run(locks.filing(UID))
        assert not entered.wait(0.5), "filed while another process purged the series"
        purger.stdin.write("\n")
        purger.stdin.flush()
        assert entered.wait(10)
        filing.join(10)
    finally:
        purger.stdin.close()
        purger.wait(10)
