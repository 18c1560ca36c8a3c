"""The executor the node's workers run jobs on, built from the ``inference`` config section.

Only :mod:`inference.api` (torch-free) is imported at module level: the in-process executor (torch,
nnU-Net) is imported inside :func:`build_executor`, so importing the node, its workers or the CLI
loads no torch; a node that never builds an executor (no model spec, or one given by the caller)
never does. Building the in-process executor is also where its process-wide settings are made once
(torch CPU threads, the stdout capture of nnU-Net's prints: see :mod:`inference.executor`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dicom_node.config import InferenceSection
from dicom_node.errors import ConfigError
from inference.api import Executor
from inference.errors import InferenceError

if TYPE_CHECKING:
    from inference.spec import ModelCatalog


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
    """One executor (predictor cache, device gate) per configured device."""
    built: list[Executor] = []
    try:
        for device in settings.devices:
            built.append(build_executor(settings, catalog, device))
    except BaseException:
        for executor in built:
            executor.close()
        raise
    return built
