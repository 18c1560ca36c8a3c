"""The inference engine's exception hierarchy. Messages are meant for users: they name the model,
file or series at fault and say what is wrong."""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error raised on purpose by ``inference``."""


class RetryLater(InferenceError):
    """The executor cannot run the request now (GPU memory taken, cluster unreachable); the same
    request may succeed later. ``retry_after``: seconds the caller should wait, None to use its own
    delay."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SpecError(InferenceError):
    """The model spec (model-serve-spec.yaml), a model folder or its metadata is invalid."""


class UnknownModelError(SpecError):
    """An id or alias that names no model in the spec."""


class SeriesError(InferenceError):
    """The DICOM files do not form a series we can turn into a volume."""


class PredictionError(InferenceError):
    """nnU-Net inference failed."""


class InsufficientGpuMemoryError(PredictionError, RetryLater):
    """Not enough free GPU memory to admit the job now (retryable)."""


class SegWriteError(InferenceError):
    """A result could not be encoded as DICOM (SEG, RTSTRUCT)."""


class PhantomError(InferenceError, ValueError):
    """Invalid arguments for a synthetic phantom or its DICOM series (dicom_node.demo.phantom)."""


class ArgsError(InferenceError):
    """Inference arguments (request parameters or a model's default_args) are invalid. ``key``: the
    parameter at fault, when one is."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
