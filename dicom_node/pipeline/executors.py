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
from inference.api import Executor

if TYPE_CHECKING:
    from inference.spec import ModelCatalog


def build_executor(settings: InferenceSection, catalog: ModelCatalog) -> Executor:
    """The executor ``settings`` ask for, serving the models of ``catalog``."""
    from inference.executor import InProcessExecutor

    return InProcessExecutor(
        catalog,
        device=settings.device,
        max_models=settings.predictor_cache_size,
    )
