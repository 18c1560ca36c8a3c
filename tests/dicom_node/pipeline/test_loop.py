"""LoopThread and Wakeup: no wake-up is lost (also one that arrives while a step runs), a failing step
is logged and the loop goes on, the step's next time and ``max_poll`` bound the wait, and stop()
waits for the running step. Waits are long (60 s) where only a wake-up may end them, so a pass proves
the wake-up and not a timeout."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from dicom_node.pipeline.loop import LoopThread, Wakeup
from tests.support.tools import wait_for

NEVER = 60.0  # a wait that only a wake-up ends within a test's time


@pytest.fixture
def loops() -> Iterator[list[LoopThread]]:
    started: list[LoopThread] = []
    yield started
    for loop in started:
        loop.stop(timeout=10)


def run(loops: list[LoopThread], step: Callable[[], float | None], **kwargs: object) -> LoopThread:
    loop = LoopThread("test-loop", step, **kwargs)  # type: ignore[arg-type]
    loops.append(loop)
    loop.start()
    return loop


# ------------------------------------------------------------------ Wakeup


def test_wake_before_wait_is_not_lost() -> None:
    w = Wakeup()
    token = w.seen()
    w.wake()  # arrives between looking for work and waiting
    assert w.wait(token, NEVER) is True


def test_wait_without_wake_times_out() -> None:
    w = Wakeup()
    assert w.wait(w.seen(), 0.01) is False
    assert w.wait(w.seen(), -1.0) is False  # a negative timeout is no wait at all


def test_wake_seen_before_the_token_does_not_count() -> None:
    w = Wakeup()
    w.wake()
    token = w.seen()
    assert w.wait(token, 0.01) is False
    assert w.seen() == token


def test_wake_from_another_thread_ends_every_waiter() -> None:
    w = Wakeup()
    token = w.seen()
    results: list[bool] = []

    def waiter() -> None:
        results.append(w.wait(token, NEVER))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    # all three blocked inside the condition (CPython keeps its waiters in _waiters)
    wait_for(lambda: len(w._cond._waiters) == 3, timeout=10, what="three waiters")  # type: ignore[attr-defined]
    w.wake()
    for t in threads:
        t.join(timeout=10)
    assert results == [True, True, True]


# ------------------------------------------------------------------ LoopThread


def test_wake_runs_the_step_again(loops: list[LoopThread]) -> None:
    calls: list[int] = []
    loop = run(loops, lambda: calls.append(1), max_poll=NEVER)
    wait_for(lambda: len(calls) >= 1, timeout=10, what="first step")
    loop.wake()
    wait_for(lambda: len(calls) >= 2, timeout=10, what="step after wake")


def test_wake_during_a_step_is_not_lost(loops: list[LoopThread]) -> None:
    """The wake comes while the step runs (after it looked for work): the loop must not then sleep
    for max_poll but run the step again at once."""
    entered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            release.wait(10)

    loop = run(loops, step, max_poll=NEVER)
    assert entered.wait(10)
    loop.wake()
    release.set()
    wait_for(lambda: len(calls) >= 2, timeout=10, what="second step")


def test_failing_step_is_logged_and_the_loop_goes_on(
    loops: list[LoopThread], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")

    with caplog.at_level(logging.ERROR, logger="dicom_node.pipeline.loop"):
        run(loops, step, max_poll=NEVER, error_pause=0.01)
        wait_for(lambda: len(calls) >= 2, timeout=10, what="step after the failure")
    [record] = [r for r in caplog.records if r.name == "dicom_node.pipeline.loop"]
    assert "test-loop: step failed" in record.getMessage()
    assert record.exc_info is not None and "disk on fire" in str(record.exc_info[1])


def test_step_deadline_in_the_past_runs_again_without_a_wake(loops: list[LoopThread]) -> None:
    calls: list[int] = []

    def step() -> float:
        calls.append(1)
        return 0.0  # long overdue

    run(loops, step, max_poll=NEVER, min_pause=0.001)
    wait_for(lambda: len(calls) >= 3, timeout=10, what="steps at their deadline")


def test_step_deadline_uses_the_injected_clock(loops: list[LoopThread]) -> None:
    """The loop computes the wait as next_at - clock(): a clock past the deadline means no wait."""
    calls: list[int] = []

    def step() -> float:
        calls.append(1)
        return 1_000.0

    run(loops, step, clock=lambda: 2_000.0, max_poll=NEVER, min_pause=0.001)
    wait_for(lambda: len(calls) >= 3, timeout=10, what="steps with a clock past the deadline")


def test_max_poll_bounds_a_far_deadline(loops: list[LoopThread]) -> None:
    calls: list[int] = []

    def step() -> float:
        calls.append(1)
        return time.time() + 3600.0

    run(loops, step, max_poll=0.01)
    wait_for(lambda: len(calls) >= 3, timeout=10, what="steps every max_poll")


def test_stop_waits_for_the_running_step(loops: list[LoopThread]) -> None:
    finished = threading.Event()
    entered = threading.Event()
    holder: list[LoopThread] = []

    def step() -> None:
        entered.set()
        while not holder[0].stopping:  # the step is busy until stop is asked
            time.sleep(0.001)
        time.sleep(0.05)  # ...and then still has work to finish
        finished.set()

    loop = LoopThread("test-loop", step, max_poll=NEVER)
    holder.append(loop)
    loop.start()
    assert entered.wait(10)
    threads = [t for t in threading.enumerate() if t.name == "test-loop"]
    assert len(threads) == 1
    loop.stop(timeout=10)
    assert finished.is_set()
    assert not threads[0].is_alive()


def test_stop_gives_up_after_its_timeout_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    entered = threading.Event()

    def step() -> None:
        entered.set()
        release.wait(30)

    loop = LoopThread("stuck-loop", step, max_poll=NEVER)
    loop.start()
    assert entered.wait(10)
    with caplog.at_level(logging.WARNING, logger="dicom_node.pipeline.loop"):
        loop.stop(timeout=0.01)
    assert "stuck-loop did not stop within 0 s" in caplog.text
    [thread] = [t for t in threading.enumerate() if t.name == "stuck-loop"]
    release.set()
    thread.join(10)
    assert not thread.is_alive()  # the step ended and the loop did not run it again


def test_several_threads_named_and_started_once(loops: list[LoopThread]) -> None:
    names: set[str] = set()
    lock = threading.Lock()
    both = threading.Barrier(2)

    def step() -> None:
        with lock:
            names.add(threading.current_thread().name)
        both.wait(10)  # only two threads running at once can pass

    loop = run(loops, step, max_poll=NEVER, threads=2)
    loop.start()  # a second start adds no threads
    wait_for(lambda: len(names) == 2, timeout=10, what="both threads")
    assert names == {"test-loop-1", "test-loop-2"}
    assert len([t for t in threading.enumerate() if t.name.startswith("test-loop")]) == 2


def test_restart_after_stop(loops: list[LoopThread]) -> None:
    calls: list[int] = []
    loop = run(loops, lambda: calls.append(1), max_poll=NEVER)
    wait_for(lambda: len(calls) >= 1, timeout=10, what="first run")
    loop.stop(timeout=10)
    assert loop.stopping
    before = len(calls)
    loop.start()
    assert not loop.stopping
    wait_for(lambda: len(calls) > before, timeout=10, what="run after restart")
