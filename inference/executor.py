"""The interface between the node and inference: an :class:`Executor` turns an
:class:`InferenceRequest` into an :class:`InferenceResult`.

:class:`InProcessExecutor` runs requests in this process on warm predictors (one cache, hence one
device, per executor). Several threads may call :meth:`InProcessExecutor.run` at once: series
loading and SEG writing overlap, predictions take turns on the device (one at a time by default,
see :class:`inference.device.DeviceGate`). A distributed executor can replace it later without the
node noticing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from inference.args import merge
from inference.device import DeviceGate, select_device
from inference.pipeline import InferenceRequest, InferenceResult, OutputFile, Pipeline
from inference.predictors import PredictorCache
from inference.spec import ModelCatalog, load_model_spec

__all__ = [
    "Executor",
    "InProcessExecutor",
    "InferenceRequest",
    "InferenceResult",
    "OutputFile",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class Executor(Protocol):
    def run(self, request: InferenceRequest) -> InferenceResult: ...


class InProcessExecutor:
    """Runs requests here, keeping up to ``max_models`` predictors warm on ``device``.

    ``catalog``: the loaded model spec (or a path to ``model-serve-spec.yaml``). ``device``:
    "auto" | "cpu" | "cuda" | "cuda:N" or a torch device. ``max_jobs``: predictions allowed on the
    device at once. ``num_threads``: torch CPU threads (CPU device only). ``probabilities_dtype``:
    float32 (default) or float16 for probability maps kept in memory and written to NIfTI.
    """

    def __init__(
        self,
        catalog: ModelCatalog | Path | str,
        *,
        device: torch.device | str = "auto",
        max_models: int = 2,
        max_jobs: int = 1,
        num_threads: int | None = None,
        probabilities_dtype: Any = np.float32,
    ) -> None:
        self.catalog = catalog if isinstance(catalog, ModelCatalog) else load_model_spec(catalog)
        chosen = device if isinstance(device, torch.device) else select_device(device)
        self.cache = PredictorCache(
            max_models, chosen, gate=DeviceGate(chosen, max_jobs=max_jobs), num_threads=num_threads
        )
        self._pipeline = Pipeline(self.catalog, self.cache, probabilities_dtype=probabilities_dtype)

    @property
    def device(self) -> torch.device:
        return self.cache.device

    def warm_up(self, model: str, *, args: dict[str, Any] | None = None) -> None:
        """Load a model's predictor now (with its default or given folds/checkpoint), so the first
        request does not pay for it."""
        resolved = self.catalog.resolve(model)
        stage = merge(resolved.default_args, args or {}).for_stage(0)
        self.cache.get(resolved.model_dir, resolved.check_stage(stage), stage.checkpoint_name)

    def run(self, request: InferenceRequest) -> InferenceResult:
        return self._pipeline.run(request)
