"""A real disk full between the spool write and the journal commit (a tmpfs in a private user+mount
namespace, filled so that the instance's file fits and the journal's WAL cannot grow): the ingest is
refused as out of resources (0xA700 at the C-STORE), the file just written is removed, and the
spool and the journal agree at once (no orphan file waiting for the start-up reconciliation)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.support.small_disk import run_on_small_tmpfs

REPO = Path(__file__).resolve().parents[3]

_PROBE = textwrap.dedent(
    """
    import errno, json, os, sys
    from pathlib import Path
    from dicom_node.errors import OutOfResourcesError
    from dicom_node.storage.filing import Spool
    from dicom_node.storage.header import InstanceHeader
    from dicom_node.storage.ingest import Ingestor, Origin, encode_file_meta
    from dicom_node.storage.journal import Journal

    root = Path(sys.argv[1])
    spool = Spool(root, fsync=True)
    journal = Journal(root / "journal.sqlite")
    ingestor = Ingestor(spool, journal)
    origin = Origin("NNUNET", "STORESCU", "assoc-1")
    def header(sop):
        return InstanceHeader("1.2.840.10008.5.1.4.1.1.2", sop, "1.2", "1.2.3", "CT")
    ingestor.ingest(header("1.2.3.4"), "1.2.840.10008.1.2.1", b"a" * 10_000, origin)
    payload = b"b" * 10_000
    need = len(encode_file_meta(header("1.2.3.5"), "1.2.840.10008.1.2.1", origin)) + len(payload)
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk, then free what the file takes
    try:
        while True:
            os.write(fd, b"f" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    os.close(fd)
    pages = -(-need // 4096)
    os.truncate(filler, (os.path.getsize(filler) // 4096 - pages) * 4096)
    try:
        ingestor.ingest(header("1.2.3.5"), "1.2.840.10008.1.2.1", payload, origin)
        outcome = "stored"
    except OutOfResourcesError as exc:
        outcome = "refused: " + str(exc)
    files = sorted(str(p.relative_to(root)) for p in spool.root.rglob("*") if p.is_file())
    rows = sorted(r.path for r in journal.instances_of_series("1.2.3"))
    print(json.dumps({"outcome": outcome, "files": files, "rows": rows}))
    """
)


def test_disk_full_during_the_journal_commit_is_out_of_resources_and_leaves_no_orphan(
    tmp_path: Path,
) -> None:
    result = run_on_small_tmpfs(tmp_path, "512k", _PROBE)
    assert result["outcome"].startswith("refused: the journal cannot record"), result
    assert "full" in result["outcome"], result
    assert result["files"] == ["spool/1.2/1.2.3/1.2.3.4.dcm"], result
    assert result["rows"] == ["spool/1.2/1.2.3/1.2.3.4.dcm"], result
