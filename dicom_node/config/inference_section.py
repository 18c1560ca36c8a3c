"""The inference section: devices, workers, and the executor (local or a Ray cluster)."""

from __future__ import annotations

import importlib.util
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from dicom_node.config.base import Strict


class LocalExecutorConfig(Strict):
    """Inference in the node's own process, on its own GPU or CPU (the default)."""

    kind: Literal["local"] = "local"


_RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.-]+:\d{1,5})$")


class RayExecutorConfig(Strict):
    """Inference on predictor actors of a Ray cluster (docs/scale-out.md). Needs the optional
    dependency ``ray`` (``pip install '.[ray]'``); the model spec and model folders must be at the same
    path on every Ray worker."""

    kind: Literal["ray"]
    address: str = Field(default="auto", description="auto, host:port of the GCS, or ray://host:port")
    max_in_flight: int = Field(default=2, ge=1, le=256, description="jobs on the cluster at once")
    actors: int = Field(default=1, ge=1, le=1024, description="predictor actors (one per GPU)")
    num_cpus_per_actor: float = Field(default=1.0, ge=0, le=1024)
    num_gpus_per_actor: float = Field(default=0.0, ge=0, le=64, description="0: CPU actors")
    memory_mb_per_actor: int | None = Field(
        default=None, ge=1, description="host memory declared to Ray; default: the spec's largest min_mem"
    )
    max_actor_attempts: int = Field(
        default=3, ge=1, le=10, description="tries of a job when actors die under it"
    )
    data: Literal["object_store", "shared_path"] = Field(
        default="object_store",
        description="series and results through Ray's object store, or by path (storage_dir shared)",
    )
    connect_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    actor_start_timeout_seconds: float = Field(default=120.0, gt=0, le=86400)
    retry_delay_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="how long jobs wait before trying an unreachable cluster"
    )

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        if not _RAY_ADDRESS.match(value) or int(value.rpartition(":")[2] or 0) > 65535:
            raise ValueError(f"invalid Ray address {value!r}: auto, host:port or ray://host:port")
        return value

    @model_validator(mode="after")
    def _installed(self) -> RayExecutorConfig:
        if importlib.util.find_spec("ray") is None:
            raise ValueError("kind ray needs the optional dependency: pip install 'nnunet-dicom-node[ray]'")
        if self.address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise ValueError("ray:// addresses need Ray Client: pip install 'ray[client]'")
        return self


ExecutorConfig = Annotated[LocalExecutorConfig | RayExecutorConfig, Field(discriminator="kind")]


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d{1,2})$")


class InferenceSection(Strict):
    device: str | list[str] = Field(
        default="auto",
        description="auto, cpu, cuda, cuda:N, or a list of cuda:N devices: one inference worker per device",
    )
    predictor_cache_size: int = Field(default=4, ge=1, le=64, description="warm predictors kept per device")
    workers: int = Field(default=1, ge=1, le=16, description="inference jobs run at once on each device")
    empty_result: Literal["empty_seg", "skip"] = Field(
        default="empty_seg",
        description="what to send when a model finds nothing: a SEG with empty segments, or nothing",
    )
    max_attempts: int = Field(default=2, ge=1, le=10)
    executor: ExecutorConfig = Field(default_factory=LocalExecutorConfig)

    @model_validator(mode="after")
    def _executor_device(self) -> InferenceSection:
        ex = self.executor
        if isinstance(ex, RayExecutorConfig):
            if self.device not in ("auto", "cuda", "cpu"):
                raise ValueError(
                    "with executor kind ray, Ray gives each actor its GPU: device is auto, cuda or cpu"
                )
            if self.device == "cuda" and ex.num_gpus_per_actor == 0:
                raise ValueError("device cuda with executor kind ray needs executor.num_gpus_per_actor > 0")
            if self.device == "cpu" and ex.num_gpus_per_actor > 0:
                raise ValueError("device cpu contradicts executor.num_gpus_per_actor > 0")
            if "workers" in self.model_fields_set:
                raise ValueError(
                    "workers is for kind local; with kind ray, executor.max_in_flight sets jobs run at once"
                )
        return self

    @field_validator("device")
    @classmethod
    def _v_device(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("device: name at least one device")
        for name in names:
            if not _DEVICE_RE.fullmatch(name.strip().lower()):
                raise ValueError(f"device {name!r}: use auto, cpu, cuda, cuda:N or a list of cuda:N")
        if isinstance(value, list):
            if any(n.strip().lower() in ("auto", "cpu", "cuda") for n in names) and len(names) > 1:
                raise ValueError("a device list names cuda:N devices only (auto, cpu, cuda stand alone)")
            normal = [n.strip().lower() for n in names]
            if len(set(normal)) != len(normal):
                raise ValueError(f"device list names a device twice: {value}")
        return value

    @property
    def devices(self) -> list[str]:
        """The devices, one inference worker (and predictor cache) each."""
        return [self.device] if isinstance(self.device, str) else list(self.device)
