"""nnU-Net's prints stay off stdout without any thread swapping ``sys.stdout``: two models loading at
once leave ``sys.stdout`` as it was, their prints land in the debug log, and what other threads
print meanwhile still reaches stdout."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest

from inference import stdout_capture
from inference.executor import InProcessExecutor
from tests.support.random_model import write_random_spec

NNUNET_CPU_NOTICE = "perform_everything_on_device=True is only supported for cuda devices"


@pytest.fixture()
def fresh_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the test installs in front of sys.stdout is taken away afterwards."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)


@pytest.mark.usefixtures("fresh_stdout")
def test_a_capturing_thread_does_not_swallow_other_threads_output(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="inference.stdout_capture")
    proxy = stdout_capture.install()
    assert stdout_capture.install() is proxy and sys.stdout is proxy  # once: a second call changes nothing
    inside, printed = threading.Event(), threading.Event()

    def capturing() -> None:
        with stdout_capture.captured("worker"):
            print("worker progress 1")
            inside.set()
            assert printed.wait(30)
            print("worker progress 2")

    thread = threading.Thread(target=capturing)
    thread.start()
    assert inside.wait(30)
    print("main thread output")  # while the worker captures
    assert sys.stdout is proxy
    printed.set()
    thread.join(30)
    sys.stdout.flush()
    out = capfd.readouterr().out
    assert "main thread output" in out
    assert "worker progress" not in out
    logged = [r.getMessage() for r in caplog.records]
    assert logged == ["worker: worker progress 1", "worker: worker progress 2"]


@pytest.mark.usefixtures("fresh_stdout")
def test_two_models_loading_at_once_leave_stdout_as_it_was(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    spec = write_random_spec(tmp_path, {"left": {"seed": 1}, "right": {"seed": 2, "folds": (0, 1)}})
    executor = InProcessExecutor(spec, device="cpu")  # start-up: installs the capture once
    before = sys.stdout
    caplog.set_level(logging.DEBUG, logger="inference.stdout_capture")
    errors: list[BaseException] = []
    for _round in range(3):
        executor.expire()
        start = threading.Barrier(2)

        def load(model: str, start: threading.Barrier = start) -> None:
            try:
                start.wait(30)
                executor.warm_up(model)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=load, args=(m,)) for m in ("left", "right")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        assert sys.stdout is before
    sys.stdout.flush()
    assert NNUNET_CPU_NOTICE not in capfd.readouterr().out
    notices = [r for r in caplog.records if NNUNET_CPU_NOTICE in r.getMessage()]
    assert len(notices) == 6  # each load's print, in the debug log
