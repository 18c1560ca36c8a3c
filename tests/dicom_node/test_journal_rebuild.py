"""A damaged journal: ``dicom-node serve`` refuses to start with one line that says what to do (no
traceback); ``dicom-node journal rebuild`` moves it aside and re-indexes the spool; it refuses a
healthy journal without ``--force`` and a storage folder a running node holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dicom_node.storage.access import lock_storage
from dicom_node.storage.filing import Spool
from dicom_node.storage.header import read_header, read_part10_layout
from dicom_node.storage.ingest import Ingestor, Origin
from dicom_node.storage.journal import Journal
from tests.support.instances import make_ct
from tests.support.node_process import REPO_ROOT, write_config
from tests.support.node_setup import model_spec, node_config
from tests.support.tools import peer_env


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", *args],
        cwd=REPO_ROOT,
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def file_instances(storage: Path, tmp_path: Path, count: int) -> None:
    journal = Journal(storage / "journal.sqlite")
    ingestor = Ingestor(Spool(storage, fsync=False), journal)
    for k in range(count):
        path = tmp_path / f"ct{k}.dcm"
        make_ct().save_as(path, enforce_file_format=True)
        with path.open("rb") as fp:
            layout = read_part10_layout(fp)
            header = read_header(fp, layout.transfer_syntax, max_inflated_bytes=1 << 30).validated()
            fp.seek(layout.dataset_offset)
            ingestor.ingest(header, layout.transfer_syntax, fp, Origin("NNUNET", "STORESCU"))
    journal.close()


def test_a_damaged_journal_stops_the_start_with_one_line_and_rebuild_reindexes_the_spool(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "var"
    config = write_config(tmp_path / "node.yaml", node_config(storage, model_spec(tmp_path / "spec"), 9))
    file_instances(storage, tmp_path, 3)
    journal_path = storage / "journal.sqlite"
    with journal_path.open("r+b") as fp:
        fp.write(b"this is no longer a database" * 4)

    serve = cli("serve", "--config", str(config))
    assert serve.returncode == 2
    assert "Traceback" not in serve.stderr
    [line] = [ln for ln in serve.stderr.splitlines() if "damaged" in ln]
    assert "dicom-node journal rebuild --config" in line

    held = lock_storage(storage)  # as a running node would
    busy = cli("journal", "rebuild", "--config", str(config))
    held.release()
    assert busy.returncode == 1 and "in use by another node" in busy.stderr

    rebuilt = cli("journal", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "3 instance(s) recorded" in rebuilt.stdout
    [aside] = storage.glob("journal.sqlite.damaged-*")
    assert aside.read_bytes().startswith(b"this is no longer a database")
    journal = Journal(journal_path)
    try:
        assert journal.counts().instances == 3
    finally:
        journal.close()

    again = cli("journal", "rebuild", "--config", str(config))
    assert again.returncode == 1 and "passes its integrity check" in again.stdout
