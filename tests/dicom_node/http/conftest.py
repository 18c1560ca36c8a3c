"""One running node for the HTTP tests: the committed demo model on CPU, the HTTP server on a free
port with a bearer token and an import root, a dcmtk storescp as its destination, and one phantom
series already sent over DICOM and segmented (the reference for the HTTP paths)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicom_node.config import config_from_mapping
from dicom_node.node import Node
from dicom_node.storage.journal import DeliveryState, JobRow, JobState, Journal
from tests.support.node_setup import model_spec, node_config, phantom_series, storescu
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import free_port, wait_for

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_LIMIT_MB = 4


@dataclass
class RunningNode:
    node: Node
    client: httpx.Client
    root: Path
    import_root: Path
    pacs_dir: Path
    series: list[Path]  # the phantom CT sent over DICOM
    dicom_job: JobRow

    @property
    def journal(self) -> Journal:
        assert self.node.journal is not None
        return self.node.journal

    def wait_job(self, job_id: int, timeout: float = 120.0) -> JobRow:
        def finished() -> JobRow | None:
            job = self.journal.get_job(job_id)
            return job if job is not None and job.state not in (JobState.PENDING, JobState.RUNNING) else None

        return wait_for(finished, timeout=timeout, what=f"job {job_id}")


def http_config(root: Path, spec: Path, dest_port: int, **http: Any) -> dict[str, Any]:
    cfg = node_config(root / "var", spec, dest_port)
    cfg["http"] = {"host": "127.0.0.1", "port": 0, "token": TOKEN, **http}
    return cfg


@pytest.fixture(scope="package")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    root = tmp_path_factory.mktemp("httpnode")
    spec = model_spec(root)
    import_root = root / "import"
    import_root.mkdir()
    (root / "outside").mkdir()
    dest_port = free_port()
    cfg = http_config(root, spec, dest_port, import_root=str(import_root), max_upload_mb=UPLOAD_LIMIT_MB)
    with dcmtk_storescp(dest_port, root / "pacs"):
        node = Node(config_from_mapping(cfg, base_dir=root))
        node.start()
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=180)
            series = phantom_series(root / "ct", slices=12)
            run = storescu(node.port, series)
            assert run.returncode == 0, run.output
            journal = node.journal
            assert journal is not None
            [job] = wait_for(
                lambda: [j for j in journal.list_jobs() if j.state == JobState.DONE],
                timeout=180,
                what="DICOM job",
            )
            wait_for(lambda: journal.list_deliveries(state=DeliveryState.DONE), timeout=60, what="delivery")
            shutil.copytree(root / "ct", import_root / "ct")
            yield RunningNode(node, client, root, import_root, root / "pacs", series, job)
            client.close()
        finally:
            node.stop()
