"""End to end with dcmtk on both sides: /usr/bin/storescu -> node (``dicom-node serve`` subprocess, the
demo model on CPU) -> /usr/bin/storescp. The SEG arrives, passes dciodvfy with no errors and
references the sent series and every sent instance."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import SegmentationStorage

from dicom_node.demo.phantom import make_phantom, write_ct_series
from tests.support.node_process import running_node, write_config
from tests.support.node_setup import model_spec
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import dciodvfy, dcmtk, free_port, peer_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


def _segs(folder: Path) -> list[Path]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:
            continue  # storescp may still be writing it
        if ds.SOPClassUID == SegmentationStorage:
            found.append(path)
    return found


def test_storescu_to_node_to_storescp(tmp_path: Path) -> None:
    scp_port = free_port()
    received = tmp_path / "storescp"
    config = write_config(
        tmp_path / "node.yaml",
        {
            "node": {
                "ae_title": "NNUNET",
                "host": "127.0.0.1",
                "port": 0,
                "storage_dir": str(tmp_path / "var"),
            },
            "model_spec": str(model_spec(tmp_path / "model")),
            "destinations": {"pacs": {"ae_title": "STORESCP", "host": "127.0.0.1", "port": scp_port}},
            "rules": [
                {
                    "name": "ct-phantom",
                    "match": {
                        "calling_ae": "STORESCU",
                        "modality": "CT",
                        "series_description": "(?i).*phantom.*",
                    },
                    "models": ["demo"],
                    "destinations": ["pacs"],
                    "series_quiet_seconds": 1,
                }
            ],
            "inference": {"device": "cpu"},
        },
    )
    phantom = make_phantom(seed=11)
    sent = write_ct_series(phantom, tmp_path / "ct", series_description="Phantom CT e2e")
    sent_headers = [dcmread(p, stop_before_pixels=True) for p in sent]

    with dcmtk_storescp(scp_port, received, ae_title="STORESCP"):
        with running_node(config, log_path=tmp_path / "node.log") as node:
            proc = subprocess.run(
                [dcmtk("storescu"), "-aet", "STORESCU", "-aec", node.ae_title, "127.0.0.1", str(node.port)]
                + [str(p) for p in sent],
                env=peer_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            segs = wait_for(lambda: _segs(received), timeout=240, interval=0.2, what="the SEG at storescp")
        assert node.process.returncode == 0, node.log()[-3000:]

    assert len(segs) == 1
    seg = dcmread(segs[0])
    assert seg.StudyInstanceUID == sent_headers[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sent_headers[0].FrameOfReferenceUID
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == sent_headers[0].SeriesInstanceUID
    referenced = {str(item.ReferencedSOPInstanceUID) for item in ref_series.ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in sent_headers}
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3]

    report = dciodvfy(segs[0])
    assert report.errors == [], report.output
