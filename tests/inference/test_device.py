"""Device selection and the per-device gate, the parts test_predictors leaves out: spelling of device
names, malformed CUDA indices, gate arguments and free memory reporting. CUDA is simulated by passing
the device count and a memory probe (no GPU runs here)."""

from __future__ import annotations

import re

import pytest
import torch

from inference.device import MIB, DeviceGate, select_device
from inference.errors import InsufficientGpuMemoryError, PredictionError


def two_gpus() -> int:
    return 2


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("cuda", torch.device("cuda", 0)),
        ("CUDA:1", torch.device("cuda", 1)),
        ("  cuda:0 ", torch.device("cuda", 0)),
        ("Auto", torch.device("cuda", 0)),
        ("CPU", torch.device("cpu")),
    ],
)
def test_device_names_are_case_and_space_insensitive(requested: str, expected: torch.device) -> None:
    assert select_device(requested, cuda_count=two_gpus) == expected


@pytest.mark.parametrize("requested", ["cuda:x", "cuda:-1", "cuda:1:2", "cuda:"])
def test_malformed_cuda_index_is_named(requested: str) -> None:
    with pytest.raises(PredictionError, match=re.escape(f"invalid device {requested!r}")):
        select_device(requested, cuda_count=two_gpus)


@pytest.mark.parametrize("requested", ["gpu", "mps", "cuda0", ""])
def test_unknown_device_lists_the_choices(requested: str) -> None:
    with pytest.raises(PredictionError, match="use auto, cpu, cuda or cuda:N"):
        select_device(requested, cuda_count=two_gpus)


def test_gate_arguments_and_free_memory() -> None:
    with pytest.raises(ValueError, match="max_jobs must be at least 1, got 0"):
        DeviceGate(torch.device("cpu"), max_jobs=0)
    seen: list[torch.device] = []

    def probe(device: torch.device) -> tuple[int, int]:
        seen.append(device)
        return 1536 * MIB, 80_000 * MIB

    gpu = DeviceGate(torch.device("cuda", 1), mem_info=probe)
    assert gpu.is_cuda and gpu.free_mib() == 1536.0
    assert seen == [torch.device("cuda", 1)]  # asks about its own device
    cpu = DeviceGate(torch.device("cpu"), mem_info=probe)
    assert not cpu.is_cuda and cpu.free_mib() is None and len(seen) == 1


@pytest.mark.parametrize("need", [None, 0, 0.0])
def test_no_requirement_admits_without_asking(need: float | None) -> None:
    def probe(_device: torch.device) -> tuple[int, int]:
        raise AssertionError("memory probed without a requirement")

    DeviceGate(torch.device("cuda", 0), mem_info=probe).admit(need)


def test_exactly_enough_memory_is_enough() -> None:
    gate = DeviceGate(torch.device("cuda", 0), mem_info=lambda _d: (4000 * MIB, 80_000 * MIB))
    gate.admit(4000)
    with pytest.raises(InsufficientGpuMemoryError, match=r"needs 4001 MiB .* on cuda:0 but only 4000 MiB"):
        gate.admit(4001)


def test_memory_the_jobs_own_model_holds_counts_towards_min_mem() -> None:
    gate = DeviceGate(torch.device("cuda", 0), mem_info=lambda _d: (1000 * MIB, 80_000 * MIB))
    gate.admit(1500, held_mib=600)  # the model's 600 MiB of weights are already there
    with pytest.raises(InsufficientGpuMemoryError, match="only 1000 MiB are free plus 400 MiB its model"):
        gate.admit(1500, held_mib=400)


def test_release_is_asked_only_when_short_and_memory_measured_again() -> None:
    free = [1000 * MIB]
    released: list[int] = []

    def release() -> int:
        released.append(1)
        free[0] = 3000 * MIB
        return 1

    gate = DeviceGate(torch.device("cuda", 0), mem_info=lambda _d: (free[0], 80_000 * MIB))
    gate.admit(900, release=release)
    assert released == []
    gate.admit(2500, release=release)
    assert released == [1]
    with pytest.raises(InsufficientGpuMemoryError):
        gate.admit(5000, release=lambda: 0)
