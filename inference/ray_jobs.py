"""What travels between the node, its Ray bridge process and the actors: plain, picklable data.

A :class:`RayJob` is an :class:`~inference.executor.InferenceRequest` without its file paths: the
series either as bytes (``data == "object_store"``: the bridge reads the files and puts them in
Ray's object store once per job, whatever the retries) or as paths every worker sees
(``"shared_path"``). A :class:`RayReply` is the actor's answer: the outputs as bytes (or as paths
under the shared ``output_dir``), the flags and timings of the result, and which models the actor
now holds warm (for routing the next job). Nothing here imports ray or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DataMode = Literal["object_store", "shared_path"]


@dataclass(frozen=True)
class RaySettings:
    """The Ray executor's settings (the node's ``inference.executor`` section with ``kind: ray``).

    ``address``: ``auto``, a GCS address ``host:port`` or ``ray://host:port`` (Ray Client).
    ``actors``: predictor actors kept on the cluster (one per GPU, or per CPU slot), each with
    ``num_cpus_per_actor`` / ``num_gpus_per_actor`` and ``memory_mb_per_actor`` of host memory
    declared to Ray (None: the largest ``min_mem`` of the spec). ``max_in_flight``: jobs on the
    cluster at once. ``max_actor_attempts``: tries of one job when actors die under it.
    ``spec_path``: ``model-serve-spec.yaml`` as every worker sees it.
    """

    spec_path: Path
    address: str = "auto"
    namespace: str = "dicom-node"
    actors: int = 1
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    memory_mb_per_actor: int | None = None
    predictor_cache_size: int = 2
    max_in_flight: int = 2
    max_actor_attempts: int = 3
    data: DataMode = "object_store"
    connect_timeout_seconds: float = 60.0
    actor_start_timeout_seconds: float = 120.0
    retry_delay_seconds: float = 30.0
    health_interval_seconds: float = 1.0
    health_failures: int = 3


@dataclass(frozen=True)
class SeriesFile:
    """One input file: its name and, in object-store mode, its bytes; else its shared path."""

    name: str
    data: bytes | None = None
    path: str | None = None


@dataclass(frozen=True)
class RayJob:
    """One request as an actor gets it. ``request``: the request's fields other than ``inputs``
    and ``output_dir`` (models, args, flags). ``output_dir``: set in shared-path mode only."""

    inputs: list[list[SeriesFile]]
    request: dict[str, Any]
    output_dir: str | None = None


@dataclass(frozen=True)
class OutputBlob:
    """One output file: ``name`` relative to the request's output folder; ``data`` its bytes
    (None in shared-path mode, where the actor wrote it in place)."""

    name: str
    kind: str
    data: bytes | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None


ReplyStatus = Literal["ok", "error", "retry"]


@dataclass
class RayReply:
    """``status``: ``ok``; ``error`` (the job failed: ``error_type``/``message`` say why);
    ``retry`` (nothing is wrong with the job: try again later, e.g. the cluster is gone)."""

    status: ReplyStatus
    outputs: list[OutputBlob] = field(default_factory=list)
    empty: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error_type: str = ""
    message: str = ""
    warm: list[str] = field(default_factory=list)
    actor: str = ""
