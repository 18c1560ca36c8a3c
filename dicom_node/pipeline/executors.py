"""The executor the node's workers run jobs on, built from the ``inference`` config section.

Only :mod:`inference.api` (torch-free) is imported at module level: the in-process executor (torch,
nnU-Net) is imported inside :func:`build_executor`, so importing the node, its workers or the CLI
loads no torch; a node that never builds an executor (no model spec, or one given by the caller)
never does. Building the in-process executor is also where its process-wide settings are made once
(torch CPU threads, the stdout capture of nnU-Net's prints: see :mod:`inference.executor`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dicom_node.config import InferenceSection, RayExecutorConfig
from dicom_node.errors import ConfigError
from inference.api import Executor
from inference.errors import InferenceError

if TYPE_CHECKING:
    from inference.spec import ModelCatalog


def worker_threads(settings: InferenceSection) -> int:
    """Worker threads an executor needs: ``workers`` in process; with Ray, one per job in flight
    on the cluster (such a thread only waits for its job's answer)."""
    executor = settings.executor
    return executor.max_in_flight if isinstance(executor, RayExecutorConfig) else settings.workers


def build_executor(settings: InferenceSection, catalog: ModelCatalog, device: str | None = None) -> Executor:
    """The executor ``settings`` ask for on ``device`` (default: the first configured), serving the
    models of ``catalog``. A device this machine lacks is a :class:`ConfigError` naming it."""
    from inference.executor import InProcessExecutor

    chosen = device if device is not None else settings.devices[0]
    try:
        return InProcessExecutor(catalog, device=chosen, max_models=settings.predictor_cache_size)
    except InferenceError as exc:
        raise ConfigError(f"inference.device {chosen!r}: {exc}") from exc


def build_executors(settings: InferenceSection, catalog: ModelCatalog) -> list[Executor]:
    """One executor (predictor cache, device gate) per configured device; with ``kind: ray`` one
    executor for the whole cluster."""
    if isinstance(settings.executor, RayExecutorConfig):
        return [_ray_executor(settings, settings.executor, catalog)]
    built: list[Executor] = []
    try:
        for device in settings.devices:
            built.append(build_executor(settings, catalog, device))
    except BaseException:
        for executor in built:
            executor.close()
        raise
    return built


def _ray_executor(settings: InferenceSection, ray: RayExecutorConfig, catalog: ModelCatalog) -> Executor:
    """Predictor actors on a Ray cluster (no ray import here: the executor's bridge process has it)."""
    from inference.ray_executor import RayExecutor, RaySettings

    return RayExecutor(
        RaySettings(
            spec_path=Path(catalog.spec_path),
            address=ray.address,
            actors=ray.actors,
            num_cpus_per_actor=ray.num_cpus_per_actor,
            num_gpus_per_actor=ray.num_gpus_per_actor,
            memory_mb_per_actor=ray.memory_mb_per_actor,
            predictor_cache_size=settings.predictor_cache_size,
            max_in_flight=ray.max_in_flight,
            max_actor_attempts=ray.max_actor_attempts,
            data=ray.data,
            connect_timeout_seconds=ray.connect_timeout_seconds,
            actor_start_timeout_seconds=ray.actor_start_timeout_seconds,
            retry_delay_seconds=ray.retry_delay_seconds,
        )
    )
