"""Readiness checks of a running node (``GET /readyz``) and the inference device's memory.

Each check answers ``ok`` and a detail a person can act on:

- ``journal``: a write transaction commits (the disk is not read-only or full, the file not locked);
- ``dicom``: the SCP's listening socket is open and its accept loop runs (no test connection: the SCP
  would hold it as an association until its ACSE timeout);
- ``models``: every model of the spec still has its folder and the checkpoints its default folds need
  (a model folder removed or unmounted after start-up shows here, not as failing jobs);
- ``device``: the inference device: "cpu", or a visible CUDA GPU with its free memory (a GPU that
  disappeared fails).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def journal_check(journal: Any) -> Check:
    if journal is None:
        return Check(False, "the journal is closed (the node is stopping)")
    try:
        journal.check_writable()
    except Exception as exc:  # any failure is the answer, not an error of the endpoint
        return Check(False, f"cannot write: {exc}")
    return Check(True, str(journal.path))


def scp_check(server: Any) -> Check:
    """The SCP's listening socket is open and its accept loop runs. Deliberately no test connection:
    the SCP would take it for an association and keep it until its ACSE timeout."""
    if server is None or not server.is_serving():
        return Check(False, "the DICOM SCP is not listening")
    return Check(True, f"listening on port {server.port}")


def models_check(catalog: Any) -> Check:
    if catalog is None:
        return Check(True, "no model spec configured: series are filed and routed, nothing is inferred")
    problems: list[str] = []
    ids = list(catalog.ids())
    for model_id in ids:
        model = catalog.resolve(model_id)
        if not model.model_dir.is_dir():
            problems.append(f"{model_id}: {model.model_dir} is missing")
            continue
        try:
            stage = model.default_args.for_stage(0)
            for fold in model.select_folds(stage.use_folds, stage.checkpoint_name):
                path = model.model_dir / f"fold_{fold}" / stage.checkpoint_name
                if not path.is_file():
                    problems.append(f"{model_id}: {path} is missing")
        except Exception as exc:
            problems.append(f"{model_id}: {exc}")
    if problems:
        return Check(False, "; ".join(problems))
    return Check(True, f"{len(ids)} model(s): {', '.join(ids)}")


def device_memory(executor: Any) -> tuple[str, int | None, int | None]:
    """The executor's device name and, for a CUDA device, its free and total memory in bytes."""
    device = getattr(executor, "device", None) if executor is not None else None
    if device is None:
        return "none", None, None
    name = str(device)
    if not name.startswith("cuda"):
        return name, None, None
    import torch  # only for a CUDA device, whose executor imported torch already

    if not torch.cuda.is_available():
        return name, None, None
    free, total = torch.cuda.mem_get_info(torch.device(name))
    return name, int(free), int(total)


def devices_memory(executors: Sequence[Any]) -> list[tuple[str, int | None, int | None]]:
    return [device_memory(e) for e in executors]


def device_check(executor: Any) -> Check:
    if executor is None:
        return Check(True, "no executor (no model spec)")
    try:
        name, free, total = device_memory(executor)
    except Exception as exc:
        return Check(False, f"cannot query the device: {exc}")
    if name.startswith("cuda"):
        if free is None or total is None:
            return Check(False, f"{name} is configured but no CUDA GPU is visible")
        return Check(True, f"{name}: {free // 2**20} MiB free of {total // 2**20} MiB")
    return Check(True, name)


def devices_check(executors: Sequence[Any]) -> Check:
    """Every inference device usable (one executor per device)."""
    if not executors:
        return device_check(None)
    checks = [device_check(e) for e in executors]
    return Check(all(c.ok for c in checks), "; ".join(c.detail for c in checks))
