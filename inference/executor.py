"""The in-process executor: implements :class:`inference.api.Executor` (the torch-free interface
the node uses) with warm nnU-Net predictors in this process.

:class:`InProcessExecutor` runs requests in this process on warm predictors (one cache, hence one
device, per executor). Several threads may call :meth:`InProcessExecutor.run` at once: series
loading and SEG writing overlap, predictions take turns on the device (one at a time by default,
see :class:`inference.device.DeviceGate`). A remote executor (e.g. Ray) implements the same
protocol, so the node does not notice which one runs its requests. Importing this module loads torch:
the node imports it only where it builds its executor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference import stdout_capture
from inference.api import InferenceRequest, InferenceResult
from inference.args import merge
from inference.device import DeviceGate, select_device, set_torch_threads
from inference.pipeline import Pipeline
from inference.predictors import PredictorCache
from inference.spec import ModelCatalog, load_model_spec

__all__ = ["InProcessExecutor"]

logger = logging.getLogger(__name__)


class InProcessExecutor:
    """Runs requests here, keeping up to ``max_models`` predictors warm on ``device``.

    ``catalog``: the loaded model spec (or a path to ``model-serve-spec.yaml``). ``device``:
    "auto" | "cpu" | "cuda" | "cuda:N" or a torch device. ``max_jobs``: predictions allowed on the
    device at once. ``num_threads``: torch CPU threads (CPU device only). ``probabilities_dtype``:
    float32 (default) or float16 for probability maps kept in memory and written to NIfTI.

    Building one makes two process-wide settings, from the thread that builds it (at start-up):
    torch's CPU threads (:func:`inference.device.set_torch_threads`, CPU device only) and the
    per-thread capture of nnU-Net's prints (:func:`inference.stdout_capture.install`); requests
    change neither.
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
        # Process-wide settings, made here once rather than per request (see the class docstring).
        if chosen.type == "cpu":
            set_torch_threads(num_threads)
        stdout_capture.install()
        # A TotalSegmentator task keeps every part (and its crop model) warm at once.
        parts = max(
            (len(m.totalseg.model_dirs()) for m in self.catalog.models.values() if m.totalseg), default=0
        )
        if parts > max_models:
            logger.warning(
                "predictor cache raised from %d to %d: a TotalSegmentator task has %d parts",
                max_models,
                parts,
                parts,
            )
            max_models = parts
        self.cache = PredictorCache(max_models, chosen, gate=DeviceGate(chosen, max_jobs=max_jobs))
        self._pipeline = Pipeline(self.catalog, self.cache, probabilities_dtype=probabilities_dtype)

    @property
    def device(self) -> torch.device:
        return self.cache.device

    def warm_up(self, model: str, *, args: dict[str, Any] | None = None) -> None:
        """Load a model's predictor now (with its default or given folds/checkpoint), so the first
        request does not pay for it."""
        resolved = self.catalog.resolve(model)
        stage = merge(resolved.default_args, args or {}).for_stage(0)
        folds = resolved.check_stage(stage)
        task = resolved.totalseg
        if task is None:
            self.cache.get(resolved.model_dir, folds, stage.checkpoint_name)
            return
        if task.crop is not None:
            for part in task.crop.run.parts:
                self.cache.get(part.model_dir, None if task.crop.run.folds == "all" else task.crop.run.folds)
        for part in task.main.parts:
            self.cache.get(part.model_dir, folds, stage.checkpoint_name)

    def run(self, request: InferenceRequest) -> InferenceResult:
        return self._pipeline.run(request)

    def expire(self) -> None:
        """Drop every warm predictor (and, on a GPU, the memory torch keeps cached for them)."""
        self.cache.clear()

    def close(self) -> None:
        self.cache.clear()
