"""nnU-Net's prints, captured per thread without swapping ``sys.stdout`` while threads run.

nnU-Net reports with ``print`` (e.g. "perform_everything_on_device=True is only supported for cuda
devices!" every time a predictor is built on the CPU). ``contextlib.redirect_stdout`` cannot keep that
off our stdout from worker threads: it swaps the process-wide ``sys.stdout``, so two threads loading
models at once restore each other's buffers (stdout stays redirected) and every other thread's output
is swallowed meanwhile.

Instead :func:`install` puts one :class:`ThreadAwareStdout` in front of ``sys.stdout``, once, at
start-up (the in-process executor's construction calls it; so does the CLI entry point). It passes
every write through to the stream it wraps, except writes from a thread inside :func:`captured`:
those are collected and logged at DEBUG when the block ends. Nothing touches ``sys.stdout`` per call.
If nothing installed the proxy (a library user who builds no executor), :func:`captured` captures
nothing and prints reach stdout as they would without us.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

logger = logging.getLogger(__name__)

_install_lock = threading.Lock()


class ThreadAwareStdout(io.TextIOBase):
    """A text stream in front of ``target``: writes from threads that are capturing go to their own
    buffer, everything else to ``target``. Attributes it does not define (``buffer``, ``fileno``,
    ``encoding``, ``isatty``...) are the target's."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target
        self._local = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        sink: list[str] | None = getattr(self._local, "sink", None)
        if sink is not None:
            sink.append(text)
            return len(text)
        return self.target.write(text)

    def flush(self) -> None:
        if getattr(self._local, "sink", None) is None:
            self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.target, "encoding", "utf-8"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """Collect this thread's writes (and only this thread's) while the block runs."""
        outer = getattr(self._local, "sink", None)
        sink: list[str] = []
        self._local.sink = sink
        try:
            yield sink
        finally:
            self._local.sink = outer


def install() -> ThreadAwareStdout:
    """Put a :class:`ThreadAwareStdout` in front of ``sys.stdout`` unless one is already there.
    Call at start-up, from the main thread, before worker threads print."""
    with _install_lock:
        current = sys.stdout
        if isinstance(current, ThreadAwareStdout):
            return current
        proxy = ThreadAwareStdout(current)
        sys.stdout = proxy
        return proxy


@contextmanager
def captured(what: str) -> Iterator[None]:
    """Keep this thread's prints off stdout while the block runs and log them (DEBUG) afterwards,
    each line prefixed with ``what``. Other threads' output is not affected; ``sys.stdout`` is only
    read, never replaced."""
    proxy = sys.stdout
    if not isinstance(proxy, ThreadAwareStdout):
        yield
        return
    with proxy.capture() as sink:
        try:
            yield
        finally:
            for line in "".join(sink).splitlines():
                if line.strip():
                    logger.debug("%s: %s", what, line)
