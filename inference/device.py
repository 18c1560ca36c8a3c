"""Which torch device runs inference, and who may use it when.

``select_device`` turns "auto" | "cpu" | "cuda" | "cuda:N" into a ``torch.device``. A
``DeviceGate`` belongs to one device: it lets a fixed number of jobs (one by default) run on it at
a time and, on a GPU, admits a job only when the model's ``min_mem`` is available: the free memory
``torch.cuda.mem_get_info`` reports plus what the job's own model already holds there (its weights,
loaded by an earlier job, count towards ``min_mem``); when that is short, the caller may release
memory (the predictor cache drops its other, idle predictors) and the gate measures again. Still
short: :class:`InsufficientGpuMemoryError`, which callers may retry later.
Gates are plain objects owned by whoever runs inference (the predictor cache); there is no global.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from inference.errors import InsufficientGpuMemoryError, PredictionError

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

#: (free bytes, total bytes) of a CUDA device, as torch.cuda.mem_get_info returns.
MemInfo = Callable[[torch.device], tuple[int, int]]


def _cuda_device_count() -> int:
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def select_device(requested: str = "auto", *, cuda_count: Callable[[], int] | None = None) -> torch.device:
    """The device for ``requested``: "auto" (CUDA when available, else CPU with a warning),
    "cpu", "cuda" or "cuda:N". Asking for CUDA where there is none is an error.

    ``cuda_count`` (number of visible CUDA devices) defaults to torch's answer."""
    count = (cuda_count or _cuda_device_count)()
    text = requested.strip().lower()
    if text == "auto":
        if count > 0:
            return torch.device("cuda", 0)
        logger.warning("no CUDA device available: inference runs on the CPU (slow for real models)")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if count == 0:
            raise PredictionError(f"device {requested!r} requested but CUDA is not available on this machine")
        try:
            device = torch.device(text)
        except RuntimeError as exc:
            raise PredictionError(f"invalid device {requested!r}: {exc}") from exc
        index = 0 if device.index is None else device.index
        if index >= count:
            raise PredictionError(f"device {requested!r} requested but only {count} CUDA device(s) exist")
        return torch.device("cuda", index)
    raise PredictionError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N")


def default_num_threads() -> int:
    """CPU threads for torch: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_torch_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads (``num_threads``, default :func:`default_num_threads`); the
    number set. This is process-wide: call it when the executor is built (from the thread that builds
    it), never per request; the last executor built decides."""
    threads = num_threads or default_num_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        logger.info("torch uses %d CPU thread(s)", threads)
    return threads


def _cuda_mem_info(device: torch.device) -> tuple[int, int]:
    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total)


class DeviceGate:
    """Admission to one device: at most ``max_jobs`` jobs at a time (one by default) and, on CUDA,
    enough free memory for the job's model.

    ``mem_info`` defaults to ``torch.cuda.mem_get_info``; tests pass a stand-in because a GPU
    cannot run here.
    """

    def __init__(self, device: torch.device, *, max_jobs: int = 1, mem_info: MemInfo | None = None) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {max_jobs}")
        self.device = device
        self.max_jobs = max_jobs
        self._slots = threading.BoundedSemaphore(max_jobs)
        self._mem_info: MemInfo = mem_info or _cuda_mem_info

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def free_mib(self) -> float | None:
        """Free memory on the device in MiB; None for the CPU."""
        if not self.is_cuda:
            return None
        free, _total = self._mem_info(self.device)
        return free / MIB

    def admit(
        self,
        min_mem_mib: float | None,
        *,
        what: str = "job",
        held_mib: float = 0.0,
        release: Callable[[], int] | None = None,
    ) -> None:
        """Raise :class:`InsufficientGpuMemoryError` unless free memory plus ``held_mib`` (what the
        job's model already holds on the device) reaches ``min_mem_mib``. When short, ``release``
        (returns how many things it freed) is called once and the memory measured again. Nothing
        to check on the CPU or without a requirement."""
        if not self.is_cuda or not min_mem_mib:
            return
        free = self.free_mib()
        assert free is not None
        if free + held_mib < min_mem_mib and release is not None and release() > 0:
            before, free = free, self.free_mib() or 0.0
            logger.info(
                "%s: released idle predictors on %s (%.0f -> %.0f MiB free)", what, self.device, before, free
            )
        if free + held_mib < min_mem_mib:
            held = f" plus {held_mib:.0f} MiB its model already holds" if held_mib else ""
            raise InsufficientGpuMemoryError(
                f"{what} needs {min_mem_mib:.0f} MiB of GPU memory on {self.device} "
                f"but only {free:.0f} MiB are free{held}; try again later"
            )
        logger.debug(
            "%s admitted on %s (%.0f MiB free, %.0f held, %.0f needed)",
            what,
            self.device,
            free,
            held_mib,
            min_mem_mib,
        )

    @contextmanager
    def job(
        self,
        min_mem_mib: float | None = None,
        *,
        what: str = "job",
        held_mib: float = 0.0,
        release: Callable[[], int] | None = None,
    ) -> Iterator[None]:
        """Hold one of the device's job slots (waiting for it) and check memory once inside (see
        :meth:`admit`), so the memory measured is not about to be taken by a job already admitted."""
        with self._slots:
            self.admit(min_mem_mib, what=what, held_mib=held_mib, release=release)
            try:
                yield
            finally:
                if self.is_cuda:
                    torch.cuda.empty_cache()
