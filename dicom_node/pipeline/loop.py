"""A background loop thread that sleeps until it is woken or its next deadline comes.

The completion loop, the inference workers and the sender share this shape: do the work that is due,
then wait until the journal says more work becomes due, or until someone calls :meth:`wake` (a new
instance, a finished job...), but never longer than ``max_poll`` seconds. No wake-up is lost: a wake
that arrives while a step runs makes the next wait return at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class Wakeup:
    """A wake-up signal several threads may wait on without losing one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    def wake(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def seen(self) -> int:
        """A token to pass to :meth:`wait` (take it before looking for work)."""
        with self._cond:
            return self._count

    def wait(self, token: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds unless a wake-up came after ``token``; True if woken."""
        with self._cond:
            if self._count != token:
                return True
            return self._cond.wait_for(lambda: self._count != token, timeout=max(0.0, timeout))


class LoopThread:
    """Runs ``step()`` in one or more daemon threads until :meth:`stop`.

    ``step()`` returns the wall-clock time at which it wants to run again (None: only when woken or
    after ``max_poll``). An exception in a step is logged and the loop goes on after ``error_pause``.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], float | None],
        *,
        clock: Clock = time.time,
        max_poll: float = 5.0,
        min_pause: float = 0.01,
        error_pause: float = 1.0,
        threads: int = 1,
    ) -> None:
        self.name = name
        self._step = step
        self._clock = clock
        self._max_poll = max_poll
        self._min_pause = min_pause
        self._error_pause = error_pause
        self._count = threads
        self._wakeup = Wakeup()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        for i in range(self._count):
            suffix = f"-{i + 1}" if self._count > 1 else ""
            t = threading.Thread(target=self._run, name=f"{self.name}{suffix}", daemon=True)
            self._threads.append(t)
            t.start()

    def wake(self) -> None:
        self._wakeup.wake()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Ask the threads to end after their current step, without waiting."""
        self._stopping.set()
        self._wakeup.wake()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the threads to end and wait for the running steps to finish (up to ``timeout``)."""
        self.request_stop()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                logger.warning("%s did not stop within %.0f s", t.name, timeout)
        self._threads = []

    def _run(self) -> None:
        while not self._stopping.is_set():
            token = self._wakeup.seen()
            try:
                next_at = self._step()
            except Exception:
                if self._stopping.is_set():
                    break
                logger.exception("%s: step failed; going on in %.1f s", self.name, self._error_pause)
                self._wakeup.wait(token, self._error_pause)
                continue
            if self._stopping.is_set():
                break
            timeout = self._max_poll
            if next_at is not None:
                timeout = min(self._max_poll, max(self._min_pause, next_at - self._clock()))
            self._wakeup.wait(token, timeout)


class LoopService:
    """Base of the node's background services: lifecycle calls go to the service's one LoopThread,
    which the subclass creates as ``self._loop`` in its constructor."""

    _loop: LoopThread

    def start(self) -> None:
        self._loop.start()

    def wake(self) -> None:
        """Look for work now (something arrived, a job finished...)."""
        self._loop.wake()

    def request_stop(self) -> None:
        """Take no new work; :meth:`stop` waits for the current step."""
        self._loop.request_stop()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; a step that is running finishes first (up to ``timeout``)."""
        self._loop.stop(timeout)
