"""The inference API the node talks to: the :class:`Executor` protocol, its request and result
types, and :class:`RetryLater`. Nothing here imports torch or nnU-Net, so the node (and any other
client) can import it cheaply; an executor that runs models is imported only where it is built.

Executors: :class:`inference.executor.InProcessExecutor` (warm nnU-Net predictors in this process,
the default) and remote ones (e.g. a Ray cluster) implement the same three methods. ``run`` may be
called from several threads at once. An executor that cannot take a request now (not enough free GPU
memory, cluster unreachable) raises :class:`RetryLater`; the caller tries the same request again
after ``retry_after`` seconds (or its own delay when that is None). Any other exception means the
request failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inference.errors import RetryLater
from inference.inflate_guard import DEFAULT_MAX_INFLATED_BYTES

__all__ = [
    "EmptyResult",
    "Executor",
    "InferenceRequest",
    "InferenceResult",
    "OutputFile",
    "RetryLater",
]

EmptyResult = Literal["empty_seg", "skip"]


class InferenceRequest(BaseModel):
    """What to segment and how.

    ``inputs``: series, each a list of DICOM file paths; several series = several input channels.
    ``models``: ids or aliases; several = a cascade run in this order. ``args``: overrides of each
    model's spec ``default_args`` (nnunet_serve names, see :mod:`inference.args`).
    ``stage_inputs``: optional per-stage input lists (series index or ``from:<model>...``, see
    :mod:`inference.cascade`); by default each stage takes the first series it needs.
    ``empty_result``: when the final label map is empty, write an empty SEG or nothing.
    ``nifti*``: NIfTI copies of label maps, probabilities, inputs (also switched on by the args
    ``save_nifti_output``, ``save_proba_map``, ``save_nifti_inputs``). ``seg_each_stage``: a SEG
    for every stage of a cascade, not only the last. ``max_inflated_bytes``: a deflated input file
    inflating beyond this is refused (the node passes its ``node.max_dataset_bytes``).
    ``input_versions``: per input series, a token of what it holds (the node: a digest of its
    instances and their content); with several input series the results' derived UIDs depend on
    every series' UID and token (else its SOP Instance UIDs), so changed inputs give a new SEG; one
    series keeps the UIDs of the series and model alone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: Sequence[Sequence[str | Path]] = Field(min_length=1)
    models: Sequence[str] = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    output_dir: Path
    empty_result: EmptyResult = "empty_seg"
    nifti: bool = False
    nifti_probabilities: bool = False
    nifti_inputs: bool = False
    stage_inputs: Sequence[Sequence[str | int]] | None = None
    seg_each_stage: bool = False
    max_inflated_bytes: int = Field(default=DEFAULT_MAX_INFLATED_BYTES, gt=0)
    input_versions: Sequence[str] | None = None

    @model_validator(mode="after")
    def _one_version_per_input(self) -> InferenceRequest:
        if self.input_versions is not None and len(self.input_versions) != len(self.inputs):
            raise ValueError(
                f"input_versions has {len(self.input_versions)} entries for {len(self.inputs)} inputs"
            )
        return self

    @field_validator("inputs", mode="after")
    @classmethod
    def _paths(cls, value: Sequence[Sequence[str | Path]]) -> list[list[str | Path]]:
        """File paths as ``Path`` objects whatever the caller passed."""
        return [[Path(item) for item in series] for series in value]


@dataclass(frozen=True)
class OutputFile:
    """A file written for a request. ``kind``: ``seg`` or ``rtstruct`` (deliverable DICOM),
    ``nifti_labels``, ``nifti_probabilities`` or ``nifti_input``; UIDs only for DICOM outputs."""

    path: Path
    kind: str
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None


@dataclass
class InferenceResult:
    """``empty``: the final label map has no foreground. ``timings``: seconds for ``load``,
    ``inference``, ``postprocess``, ``seg_write``, ``total``."""

    outputs: list[OutputFile] = field(default_factory=list)
    empty: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@runtime_checkable
class Executor(Protocol):
    """Runs inference requests. Thread-safe: the node's workers call ``run`` concurrently."""

    def run(self, request: InferenceRequest) -> InferenceResult:
        """Run one request, writing its outputs under ``request.output_dir``. Raises
        :class:`RetryLater` when it cannot run the request now, any other exception when it failed."""
        ...

    def expire(self) -> None:
        """Drop cached models (warm predictors); the next request loads what it needs again."""
        ...

    def close(self) -> None:
        """Release everything the executor holds (models, connections). No ``run`` afterwards."""
        ...
