"""The ``inference.executor`` section: local by default, Ray checked when the config loads."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from dicom_node.config import RayExecutorConfig, config_from_mapping
from dicom_node.errors import ConfigError


def load(inference: dict[str, Any], tmp_path: Path) -> Any:
    return config_from_mapping({"inference": inference}, base_dir=tmp_path).inference


def error_of(inference: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(inference, tmp_path)
    return str(info.value)


def test_without_an_executor_section_inference_runs_in_process(tmp_path: Path) -> None:
    assert load({}, tmp_path).executor.kind == "local"


def test_a_ray_section_loads_with_its_settings(tmp_path: Path) -> None:
    ray = {"kind": "ray", "address": "head.local:6379", "num_gpus_per_actor": 1, "max_in_flight": 8}
    section = load({"device": "cuda", "executor": ray}, tmp_path)
    assert isinstance(section.executor, RayExecutorConfig)
    assert (section.executor.address, section.executor.max_in_flight) == ("head.local:6379", 8)


@pytest.mark.parametrize("address", ["head", "http://head:6379", "head:99999", "ray://", ""])
def test_a_malformed_ray_address_is_refused_at_load(tmp_path: Path, address: str) -> None:
    message = error_of({"executor": {"kind": "ray", "address": address}}, tmp_path)
    assert "inference.executor.ray.address" in message


def test_an_unknown_executor_kind_is_refused(tmp_path: Path) -> None:
    assert "inference.executor" in error_of({"executor": {"kind": "dask"}}, tmp_path)


def test_workers_with_ray_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    message = error_of({"workers": 4, "executor": {"kind": "ray"}}, tmp_path)
    assert "max_in_flight" in message


def test_a_cuda_node_with_cpu_actors_is_refused(tmp_path: Path) -> None:
    message = error_of({"device": "cuda", "executor": {"kind": "ray"}}, tmp_path)
    assert "num_gpus_per_actor" in message


def test_ray_configured_but_not_installed_is_a_clear_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    message = error_of({"executor": {"kind": "ray"}}, tmp_path)
    assert "pip install 'nnunet-dicom-node[ray]'" in message


def test_ray_client_addresses_need_ray_client_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a)
    )
    message = error_of({"executor": {"kind": "ray", "address": "ray://head:10001"}}, tmp_path)
    assert "ray[client]" in message


def test_a_device_list_with_ray_is_refused(tmp_path: Path) -> None:
    ray = {"kind": "ray", "num_gpus_per_actor": 1}
    message = error_of({"device": ["cuda:0", "cuda:1"], "executor": ray}, tmp_path)
    assert "Ray gives each actor its GPU" in message
