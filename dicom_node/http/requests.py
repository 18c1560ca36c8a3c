"""The request model of the inference endpoints: nnunet_serve's field names (``nnunet_id``,
``series_folders``, ``use_folds``, ``tta``, ``proba_threshold``...), validated by pydantic.

:class:`InferRequest` is :class:`inference.args.InferenceArgs` (``series_folders`` included, with its
cascade meaning: a folder name stands for the n-th series) plus the model ids: a field the client
leaves out takes the model spec's ``default_args`` (only the fields set explicitly become the job's
argument overrides). Unknown fields are refused, so a misspelt option is a 422 naming
it, never silently ignored. Its JSON schema is ``GET /request-params``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from inference.args import InferenceArgs

REQUEST_ONLY = frozenset({"nnunet_id", "series_ids"})


class InferRequest(InferenceArgs):
    """``POST /infer_file`` (the ``request`` form field) and ``POST /infer`` (``series_folders``)."""

    nnunet_id: str | list[str] = Field(
        description="model id or alias; several run as a cascade, in order", min_length=1
    )

    @field_validator("nnunet_id")
    @classmethod
    def _ids(cls, value: str | list[str]) -> str | list[str]:
        ids = [value] if isinstance(value, str) else value
        if not ids or any(not i.strip() for i in ids):
            raise ValueError("nnunet_id must name at least one model")
        return value

    @property
    def models(self) -> list[str]:
        return [self.nnunet_id] if isinstance(self.nnunet_id, str) else list(self.nnunet_id)

    def overrides(self) -> dict[str, Any]:
        """The inference arguments the client set (the job's ``args``)."""
        return self.model_dump(exclude_unset=True, exclude=set(REQUEST_ONLY))

    def folders(self) -> list[str]:
        """The folder names ``series_folders`` gives (not series indexes nor ``from:`` references),
        each once, in order: for ``POST /infer``, the folders to read under the import root."""
        names: dict[str, None] = {}
        raw = self.series_folders or []
        for item in raw:
            for entry in item if isinstance(item, list) else [item]:
                if isinstance(entry, str) and not entry.startswith("from:"):
                    names.setdefault(entry, None)
        return list(names)


class OrthancRequest(InferRequest):
    """``POST /infer_orthanc``: Orthanc series ids instead of folders."""

    series_ids: list[str] | list[list[str]] = Field(
        description="Orthanc series id(s) (the ids of Orthanc's REST API, not DICOM UIDs)", min_length=1
    )

    def orthanc_ids(self) -> list[str]:
        """The Orthanc series to fetch: each id once, ``from:`` references left out."""
        ids: dict[str, None] = {}
        for item in self.series_ids:
            for entry in [item] if isinstance(item, str) else item:
                if not entry.startswith("from:"):
                    ids.setdefault(entry, None)
        return list(ids)

    def overrides(self) -> dict[str, Any]:
        """As :meth:`InferRequest.overrides`; per-stage ``series_ids`` (a cascade with ``from:``
        references, as nnunet_serve adapts them) become the job's ``series_folders``."""
        out = super().overrides()
        if "series_folders" not in out and any(isinstance(item, list) for item in self.series_ids):
            out["series_folders"] = [
                list(item) if isinstance(item, list) else [item] for item in self.series_ids
            ]
        return out
