"""The predictor actor: warm nnU-Net predictors on one GPU (or CPU slot) of a Ray cluster.

A plain class; :mod:`inference.ray_bridge` declares it to Ray with its resources. Each actor loads
the model spec from a path every worker sees (the models' folders too: a shared file system, or
the same copy at the same path on every machine) and keeps its own :class:`InProcessExecutor`, so a
model is read from disk once per actor and stays warm for the next job routed here.

A job's series arrive as bytes (written to a private temp folder here, so the SEG is built from the
same bytes the node filed) or as shared paths; the outputs go back as bytes (or stay in the shared
output folder). A failure of the job is answered as data, not raised, so the node tells a bad job
(``error``) from a dead actor (Ray's ``ActorDiedError`` in the bridge).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from inference.errors import InferenceError, RetryLater
from inference.ray_jobs import OutputBlob, RayJob, RayReply, SeriesFile

logger = logging.getLogger(__name__)


class PredictorActor:
    """Runs :class:`RayJob` s on warm predictors. ``device``: "cpu" or "cuda" (Ray sets
    ``CUDA_VISIBLE_DEVICES`` to the GPU it gave this actor)."""

    def __init__(self, spec_path: str, *, device: str, max_models: int, num_threads: int | None) -> None:
        from inference.executor import InProcessExecutor  # torch: on the worker only

        self._executor = InProcessExecutor(
            Path(spec_path), device=device, max_models=max_models, num_threads=num_threads
        )
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        """Answers once the actor is placed and its spec loaded: where it runs."""
        return self.name

    def warm_models(self) -> list[str]:
        """Ids and aliases of the models with a predictor in this actor's cache."""
        cached = {key.model_dir for key in self._executor.cache.cached_keys()}
        names: list[str] = []
        for model in self._executor.catalog.models.values():
            if str(model.model_dir.resolve()) in cached:
                names.extend([model.id, *model.aliases])
        return names

    def expire(self) -> None:
        self._executor.expire()

    def run(self, job: RayJob) -> RayReply:
        from inference.api import InferenceRequest

        scratch = Path(tempfile.mkdtemp(prefix="dicom-node-job-"))
        try:
            inputs = [self._materialise(s, scratch / f"input-{i}") for i, s in enumerate(job.inputs)]
            output_dir = Path(job.output_dir) if job.output_dir is not None else scratch / "out"
            request = InferenceRequest(inputs=inputs, output_dir=output_dir, **job.request)
            try:
                result = self._executor.run(request)
            except RetryLater as exc:
                return self._reply("retry", message=str(exc))
            except InferenceError as exc:
                return self._reply("error", error_type=type(exc).__name__, message=str(exc))
            outputs = []
            for out in result.outputs:
                path = Path(out.path) if Path(out.path).is_absolute() else output_dir / out.path
                outputs.append(
                    OutputBlob(
                        name=str(path.relative_to(output_dir)),
                        kind=out.kind,
                        data=None if job.output_dir is not None else path.read_bytes(),
                        sop_instance_uid=out.sop_instance_uid,
                        sop_class_uid=out.sop_class_uid,
                    )
                )
            reply = self._reply("ok")
            reply.outputs = outputs
            reply.empty = result.empty
            reply.timings = dict(result.timings)
            reply.warnings = list(result.warnings)
            return reply
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _reply(self, status: Any, **fields: Any) -> RayReply:
        return RayReply(status=status, warm=self.warm_models(), actor=self.name, **fields)

    @staticmethod
    def _materialise(series: list[SeriesFile], folder: Path) -> list[Path]:
        """The series' files as paths: shared paths as they are, bytes written to ``folder``."""
        paths: list[Path] = []
        for index, item in enumerate(series):
            if item.data is None:
                if item.path is None:
                    raise InferenceError(f"input file {item.name!r} came with neither bytes nor a path")
                paths.append(Path(item.path))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{index:06d}.dcm"
            target.write_bytes(item.data)
            paths.append(target)
        return paths
