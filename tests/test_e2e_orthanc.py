"""End to end with Orthanc as the PACS: a study with two series is uploaded to Orthanc, Orthanc pushes
it to the node over DICOM (REST ``/modalities/{id}/store``), the node segments the series that matches
its rule and sends the SEG back. Orthanc then holds exactly one SEG in the study, for that series; the
other series got nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.demo.phantom import make_phantom, write_ct_series
from dicom_node.storage.journal import Journal
from tests.support.node_process import running_node, write_config
from tests.support.node_setup import model_spec
from tests.support.orthanc import Modality, OrthancFactory, orthanc_factory
from tests.support.tools import wait_for

__all__ = ["orthanc_factory"]

pytestmark = [pytest.mark.slow, pytest.mark.orthanc]


def _seg_series(pacs, study_id: str) -> list[dict]:
    return [s for s in pacs.series_of_study(study_id) if s["MainDicomTags"].get("Modality") == "SEG"]


def test_orthanc_pushes_a_study_and_gets_one_seg_back(
    orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    pacs = orthanc_factory(ae_title="ORTHANC")
    config = write_config(
        tmp_path / "node.yaml",
        {
            "node": {
                "ae_title": "NNUNET",
                "host": "127.0.0.1",
                "port": 0,
                "storage_dir": str(tmp_path / "var"),
                "allowed_calling_aes": ["ORTHANC"],
            },
            "model_spec": str(model_spec(tmp_path / "model")),
            "destinations": {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}},
            "rules": [
                {
                    "name": "ct-phantom",
                    "match": {
                        "calling_ae": "ORTHANC",
                        "modality": "CT",
                        "series_description": "(?i).*phantom.*",
                    },
                    "models": ["demo"],
                    "destinations": ["pacs"],
                    "series_quiet_seconds": 2,
                }
            ],
            "inference": {"device": "cpu"},
        },
    )
    study_uid = "1.2.826.0.1.3680043.8.498.4242.1"
    phantom_uid, other_uid = f"{study_uid}.1", f"{study_uid}.2"
    matching = write_ct_series(
        make_phantom(seed=21),
        tmp_path / "phantom",
        study_uid=study_uid,
        series_uid=phantom_uid,
        series_description="Phantom CT",
        series_number=1,
    )
    other = write_ct_series(
        make_phantom(shape=(8, 64, 64), seed=22),
        tmp_path / "other",
        study_uid=study_uid,
        series_uid=other_uid,
        series_description="Abdomen routine",
        series_number=2,
    )
    pacs.upload_all(matching + other)
    study_id = pacs.study_id(study_uid)
    assert study_id is not None
    assert len(pacs.series_of_study(study_id)) == 2

    with running_node(config, log_path=tmp_path / "node.log") as node:
        pacs.add_modality("nnunet", Modality(node.ae_title, "127.0.0.1", node.port))
        pushed = pacs.push("nnunet", study_id)
        assert pushed.get("FailedInstancesCount", 0) == 0
        assert pushed.get("InstancesCount") == len(matching) + len(other)

        segs = wait_for(
            lambda: _seg_series(pacs, study_id), timeout=240, interval=0.2, what="a SEG in Orthanc"
        )
        journal = Journal(tmp_path / "var" / "journal.sqlite", readonly=True)
        try:
            # The delivery is journaled once the C-STORE response is back; then nothing is left to do.
            wait_for(
                lambda: journal.list_deliveries(state="done"),
                timeout=30,
                what="the delivery recorded as done",
            )
            other_series = journal.get_series(other_uid)
            jobs = journal.list_jobs()
            open_deliveries = [d for d in journal.list_deliveries() if d.state in {"pending", "sending"}]
        finally:
            journal.close()
        all_series = pacs.series_of_study(study_id)
    assert node.process.returncode == 0, node.log()[-3000:]

    # exactly one SEG, one instance, for the matching series
    assert len(segs) == 1
    assert len(segs[0]["Instances"]) == 1
    assert len(all_series) == 3
    seg_file = pacs.instance_file(segs[0]["Instances"][0])
    seg_path = tmp_path / "seg.dcm"
    seg_path.write_bytes(seg_file)
    seg = dcmread(seg_path, stop_before_pixels=True)
    assert [str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence] == [phantom_uid]
    # the other series was filed, matched no rule and produced no job
    assert other_series is not None and other_series.state == "unmatched"
    assert {j.series_uid for j in jobs} == {phantom_uid}
    assert open_deliveries == []
