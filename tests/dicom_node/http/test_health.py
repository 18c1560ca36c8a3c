"""Readiness and metrics of the inference device. A CUDA GPU cannot run here, so torch's CUDA queries
are replaced (the only mock of the HTTP tests); the CPU case is the real one."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dicom_node.http import health
from dicom_node.http.metrics import NodeMetrics


class _Executor:
    def __init__(self, device: str) -> None:
        self.device = torch.device(device)


def test_a_cpu_executor_is_ready_and_reports_no_gpu_memory() -> None:
    assert health.device_memory(_Executor("cpu")) == ("cpu", None, None)
    assert health.device_check(_Executor("cpu")) == health.Check(True, "cpu")


def test_a_visible_gpu_reports_its_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * 2**30, 80 * 2**30))
    check = health.device_check(_Executor("cuda:0"))
    assert check.ok and "6144 MiB free of 81920 MiB" in check.detail
    metrics = NodeMetrics()
    metrics.refresh_gpu(lambda: health.devices_memory([_Executor("cuda:0")]))
    text = metrics.render(None).decode()
    samples = dict(line.split(" ") for line in text.splitlines() if line.startswith("dicom_node_gpu"))
    assert float(samples['dicom_node_gpu_memory_free_bytes{device="cuda:0"}']) == 6 * 2**30
    assert float(samples['dicom_node_gpu_memory_total_bytes{device="cuda:0"}']) == 80 * 2**30


def test_a_gpu_that_disappeared_fails_readiness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check = health.device_check(_Executor("cuda:0"))
    assert not check.ok and "no CUDA GPU is visible" in check.detail


def test_a_missing_journal_fails_readiness() -> None:
    class Broken:
        path = "journal.sqlite"

        def check_writable(self) -> Any:
            raise OSError("attempt to write a readonly database")

    assert health.journal_check(None).ok is False
    check = health.journal_check(Broken())
    assert not check.ok and "readonly" in check.detail
