"""What the HTTP routes need from the running node, behind one object bound to the app
(``app.state.context``), so handlers stay thin and testable."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from dicom_node.config import HttpSection, NodeConfig

if TYPE_CHECKING:
    from dicom_node.http.metrics import NodeMetrics
    from dicom_node.node import Node
    from dicom_node.storage.ingest import Ingestor
    from dicom_node.storage.journal import Journal
    from inference.api import Executor


@dataclass
class HttpContext:
    node: Node
    settings: HttpSection
    metrics: NodeMetrics
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)

    @property
    def config(self) -> NodeConfig:
        return self.node.config

    @property
    def storage_dir(self) -> Path:
        return self.node.storage_dir

    def journal(self) -> Journal:
        journal = self.node.journal
        if journal is None:
            raise HTTPException(503, "the node is stopping")
        return journal

    def ingestor(self) -> Ingestor:
        ingestor = self.node.ingestor
        if ingestor is None:
            raise HTTPException(503, "the node is not running")
        return ingestor

    @property
    def catalog(self) -> Any:
        return self.node.catalog

    @property
    def executors(self) -> list[Executor]:
        """One per inference device (none without a model spec)."""
        return list(self.node.executors)

    @property
    def devices(self) -> str:
        """The inference devices, for answers (``cpu``, ``cuda:0, cuda:1``, ``none``)."""
        return ", ".join(str(getattr(e, "device", "?")) for e in self.node.executors) or "none"

    def require_catalog(self) -> Any:
        if self.node.catalog is None or not self.node.executors:
            raise HTTPException(503, "this node has no model spec: it runs no inference")
        return self.node.catalog


def context_of(request: Request) -> HttpContext:
    ctx: HttpContext = request.app.state.context
    return ctx
