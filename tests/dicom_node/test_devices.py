"""``inference.device``: cuda:N and device lists accepted at load, one inference worker per device;
a device this machine lacks is a start error naming the setting. No GPU here: executors are stood in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dicom_node.config import config_from_mapping
from dicom_node.errors import ConfigError
from dicom_node.node import Node
from dicom_node.pipeline import executors
from inference.executor import InferenceRequest, InferenceResult
from tests.support.fake_model import make_model_folder, write_spec


def config(tmp_path: Path, device: Any) -> Any:
    make_model_folder(tmp_path / "models" / "liver" / "T__P__3d_fullres", size=100)
    spec = write_spec(
        tmp_path / "spec.yaml", {"model_folder": "models", "models": [{"id": "liver", "rel_path": "liver"}]}
    )
    data = {
        "node": {"ae_title": "NNUNET", "host": "127.0.0.1", "port": 0, "storage_dir": str(tmp_path / "var")},
        "model_spec": str(spec),
        "inference": {"device": device},
    }
    return config_from_mapping(data, base_dir=tmp_path)


@pytest.mark.parametrize("device", ["cuda:1", ["cuda:0", "cuda:1"], "cpu", "auto"])
def test_devices_accepted(tmp_path: Path, device: Any) -> None:
    cfg = config(tmp_path, device)
    assert cfg.inference.devices == ([device] if isinstance(device, str) else device)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("gpu", "use auto, cpu, cuda, cuda:N"),
        (["cuda:0", "cuda:0"], "names a device twice"),
        (["cpu", "cuda:0"], "cuda:N devices only"),
        ([], "at least one device"),
    ],
)
def test_bad_devices_refused_at_load(tmp_path: Path, device: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, device)


class StandIn:
    def __init__(self, device: str) -> None:
        self.device = device

    def run(self, request: InferenceRequest) -> InferenceResult:
        return InferenceResult()

    def expire(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_one_worker_per_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def build(settings: Any, catalog: Any, device: str) -> StandIn:
        built.append(device)
        return StandIn(device)

    monkeypatch.setattr(executors, "build_executor", build)
    with Node(config(tmp_path, ["cuda:0", "cuda:1"])) as node:
        assert built == ["cuda:0", "cuda:1"]
        assert len(node.workers) == 2 and node.worker is node.workers[0]
    assert node.workers == []


def test_a_device_this_machine_lacks_is_a_start_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with (
        pytest.raises(ConfigError, match=r"inference.device 'cuda:1'.*CUDA is not available"),
        Node(config(tmp_path, "cuda:1")),
    ):
        pass
