"""``POST /infer_orthanc`` against a real Orthanc (the suite's fixture): the series is fetched over
Orthanc's REST API, segmented by the node's workers, and the SEG is stored back into Orthanc."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dicom_node.config import config_from_mapping
from dicom_node.node import Node
from dicom_node.storage.journal import Trigger
from tests.dicom_node.http.conftest import AUTH, http_config
from tests.support.node_setup import model_spec, phantom_series
from tests.support.orthanc import OrthancFactory, orthanc_factory
from tests.support.tools import free_port

__all__ = ["orthanc_factory"]

pytestmark = [pytest.mark.slow, pytest.mark.orthanc]


def test_an_orthanc_series_is_segmented_and_its_seg_stored_back(
    tmp_path: Path,
    orthanc_factory: OrthancFactory,
) -> None:
    pacs = orthanc_factory()
    files = phantom_series(tmp_path / "ct", slices=8, seed=7)
    answers = pacs.upload_all(files)
    series_id = answers[0]["ParentSeries"]
    study_id = answers[0]["ParentStudy"]
    cfg = http_config(tmp_path, model_spec(tmp_path), free_port(), orthanc={"url": pacs.url})
    with Node(config_from_mapping(cfg, base_dir=tmp_path)) as node:
        client = httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=180)
        bad = client.post(
            "/infer_orthanc", json={"nnunet_id": "demo", "series_ids": ["not-an-id"]}, headers=AUTH
        )
        assert bad.status_code == 422 and "series_ids" in bad.text
        unknown = "0" * 8 + ("-" + "0" * 8) * 4
        missing = client.post(
            "/infer_orthanc", json={"nnunet_id": "demo", "series_ids": [unknown]}, headers=AUTH
        )
        assert missing.status_code == 404, missing.text

        r = client.post("/infer_orthanc", json={"nnunet_id": "demo", "series_ids": [series_id]}, headers=AUTH)
        body = r.json()
        assert r.status_code == 200, body
        assert body["orthanc_upload"]["uploaded_instance_count"] == 1
        assert body["orthanc_upload"]["errors"] == []
        job = node.journal.get_job(body["job_id"])  # type: ignore[union-attr]
        assert job is not None and job.trigger == Trigger.HTTP
        # the series matches the node's CT rule, but a request's series is the request's alone
        assert [j.id for j in node.journal.list_jobs()] == [job.id]  # type: ignore[union-attr]

        # per stage, as nnunet_serve's cascades give it: the same SEG (same UIDs) again
        again = client.post(
            "/infer_orthanc", json={"nnunet_id": "demo", "series_ids": [[series_id]]}, headers=AUTH
        )
        assert again.status_code == 200, again.text
        assert again.json()["sop_instance_uids"] == body["sop_instance_uids"]
        rerun = node.journal.get_job(again.json()["job_id"])  # type: ignore[union-attr]
        assert rerun is not None and rerun.args["series_folders"] == [[series_id]]
        client.close()

    series = pacs.series_of_study(study_id)
    segs = [s for s in series if s["MainDicomTags"].get("Modality") == "SEG"]
    assert len(segs) == 1
    [instance] = pacs.instances_of_series(segs[0]["ID"])
    assert pacs.instance_tags(instance["ID"])["SOPInstanceUID"] == body["sop_instance_uids"][0]
