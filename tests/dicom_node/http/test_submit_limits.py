"""Files uploaded over HTTP are read with the node's data set limit, like received ones."""

from __future__ import annotations

from pathlib import Path

from dicom_node.http.submit import file_instances
from dicom_node.storage.filing import Spool
from dicom_node.storage.ingest import Ingestor, Origin
from dicom_node.storage.journal import Journal
from tests.support.deflate_bomb import write_deflate_bomb
from tests.support.instances import make_ct


def test_an_uploaded_deflate_bomb_is_refused_by_the_configured_limit(
    journal: Journal, tmp_path: Path
) -> None:
    """A deflated file inflating to 48 MiB: rejected with the reason under a 32 MiB limit, filed
    under the default one."""
    template = tmp_path / "ct.dcm"
    make_ct().save_as(template, enforce_file_format=True)
    bomb = write_deflate_bomb(template, tmp_path / "bomb.dcm", 48 << 20)
    storage = tmp_path / "var"
    origin = Origin("NNUNET", "HTTP")
    strict = Ingestor(Spool(storage, fsync=False, max_dataset_bytes=32 << 20), journal)
    report = file_instances([bomb], strict, origin)
    assert report.series == {}
    [(name, reason)] = report.rejected
    assert name == str(bomb) and "inflates to more than 33554432 bytes" in reason
    lenient = Ingestor(Spool(storage, fsync=False), journal)
    assert sum(file_instances([bomb], lenient, origin).series.values()) == 1
