"""nnunet_serve's inference endpoints on the node: an upload runs through the journal and the workers
and gives the SEG the DICOM path gives; unsafe or invalid requests are refused with the field named."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from pydicom import dcmread

from dicom_node.storage.journal import SeriesState, Trigger
from tests.dicom_node.http.conftest import AUTH, UPLOAD_LIMIT_MB, RunningNode
from tests.support import archives
from tests.support.node_setup import phantom_series

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


def post_file(running: RunningNode, data: bytes, request: Any = None, *, name: str = "series.zip") -> Any:
    fields = {"request": json.dumps(request if request is not None else {"nnunet_id": "demo"})}
    return running.client.post("/infer_file", files={"file": (name, data)}, data=fields, headers=AUTH)


def seg_of_download(running: RunningNode, job_id: int) -> Any:
    r = running.client.get(f"/download/{job_id}", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dcm")]
        return dcmread(io.BytesIO(archive.read(name)))


def test_an_uploaded_series_gives_the_seg_the_dicom_path_gives(running: RunningNode) -> None:
    r = post_file(running, archives.zip_of(running.series))
    body = r.json()
    assert r.status_code == 200, body
    assert body["status"] == "success" and body["dicom_segmentation"] == ["seg-demo.dcm"]
    job = running.journal.get_job(body["job_id"])
    assert job is not None and (job.trigger, job.destinations) == (Trigger.HTTP, ())
    via_http = seg_of_download(running, body["job_id"])
    [dicom_out] = [o for o in running.dicom_job.outputs if o.kind == "seg"]
    via_dicom = dcmread(running.node.storage_dir / dicom_out.path)
    for keyword in (
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "NumberOfFrames",
        "SegmentSequence",
    ):
        assert via_http[keyword] == via_dicom[keyword], keyword
    assert via_http.PixelData == via_dicom.PixelData
    assert body["sop_instance_uids"] == [str(via_dicom.SOPInstanceUID)]


def test_a_gzip_tar_upload_with_an_alias_and_an_argument_override_works(running: RunningNode) -> None:
    r = post_file(
        running, archives.tar_of(running.series), {"nnunet_id": "phantom", "tta": False}, name="s.tar.gz"
    )
    assert r.status_code == 200, r.text
    job = running.journal.get_job(r.json()["job_id"])
    assert job is not None and job.models == ("phantom",) and dict(job.args) == {"tta": False}


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (lambda: archives.zip_with_member("../../../escaped.dcm"), 400, "'..'"),
        (lambda: archives.zip_with_member("/tmp/escaped.dcm"), 400, "absolute"),
        (archives.zip_with_symlink, 400, "symbolic link"),
        (archives.tar_with_link, 400, "a link"),
        (lambda: archives.zip_bomb(2 * 1024 * 1024), 400, "decompression bomb"),
        (lambda: b"\x00" * (UPLOAD_LIMIT_MB * 1024 * 1024 + 1), 413, "larger than"),
        (lambda: b"hello, not DICOM" * 100, 400, "neither"),
    ],
    ids=["zip-slip", "absolute", "zip-symlink", "tar-symlink", "bomb", "too-large", "not-an-archive"],
)
def test_unsafe_uploads_are_refused_before_anything_is_filed(
    running: RunningNode, data: Any, status: int, words: str
) -> None:
    jobs_before = len(running.journal.list_jobs(limit=1000))
    r = post_file(running, data())
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert len(running.journal.list_jobs(limit=1000)) == jobs_before
    assert not list(running.root.rglob("escaped.dcm"))
    assert not [p for p in (running.node.storage_dir / "http-tmp").iterdir() if p.is_dir()]


@pytest.mark.parametrize(
    ("request_json", "field"),
    [
        ({"nnunet_id": "demo", "use_folds": "some"}, "use_folds"),
        ({"nnunet_id": "demo", "proba_threshold": 1.5}, "proba_threshold"),
        ({"nnunet_id": "demo", "tta": "maybe"}, "tta"),
        ({"nnunet_id": "demo", "use_fold": [0]}, "use_fold"),
        ({"use_folds": [0]}, "nnunet_id"),
        ({"nnunet_id": "demo", "use_folds": [3]}, "fold 3"),
        ({"nnunet_id": "demo", "series_folders": [["a", "b"]]}, "series_folders"),
    ],
)
def test_an_invalid_request_is_422_naming_the_field(
    running: RunningNode, request_json: Any, field: str
) -> None:
    r = post_file(running, archives.zip_of(running.series[:1]), request_json)
    assert r.status_code == 422, r.text
    assert field in json.dumps(r.json()["detail"])


def test_an_unknown_model_is_404_naming_it(running: RunningNode) -> None:
    r = post_file(running, archives.zip_of(running.series[:1]), {"nnunet_id": "no-such-model"})
    assert r.status_code == 404 and "no-such-model" in r.json()["detail"]


def test_a_request_without_file_or_request_is_422(running: RunningNode) -> None:
    no_file = running.client.post("/infer_file", data={"request": '{"nnunet_id": "demo"}'}, headers=AUTH)
    no_request = running.client.post("/infer_file", files={"file": ("a.zip", b"x")}, headers=AUTH)
    assert no_file.status_code == 422 and "file" in json.dumps(no_file.json()["detail"])
    assert no_request.status_code == 422 and "request" in json.dumps(no_request.json()["detail"])


def test_infer_reads_a_folder_under_the_import_root_only(running: RunningNode) -> None:
    ok = running.client.post("/infer", json={"nnunet_id": "demo", "series_folders": [["ct"]]}, headers=AUTH)
    assert ok.status_code == 200, ok.text
    assert seg_of_download(running, ok.json()["job_id"]).Modality == "SEG"
    for folder in ("../outside", str(running.root / "ct"), "/etc", "ct/../../outside"):
        r = running.client.post(
            "/infer", json={"nnunet_id": "demo", "series_folders": [folder]}, headers=AUTH
        )
        assert r.status_code == 403, (folder, r.text)
    missing = running.client.post(
        "/infer", json={"nnunet_id": "demo", "series_folders": ["nope"]}, headers=AUTH
    )
    assert missing.status_code == 404


def test_a_link_inside_the_import_root_pointing_out_is_not_followed(running: RunningNode) -> None:
    (running.root / "outside" / "secret.dcm").write_bytes(running.series[0].read_bytes())
    folder = running.import_root / "linked"
    folder.mkdir()
    (folder / "secret.dcm").symlink_to(running.root / "outside" / "secret.dcm")
    r = running.client.post("/infer", json={"nnunet_id": "demo", "series_folders": ["linked"]}, headers=AUTH)
    assert r.status_code == 422 and "no usable DICOM" in json.dumps(r.json()["detail"])


def test_infer_also_takes_its_request_as_query_parameters_like_nnunet_serve(running: RunningNode) -> None:
    params = {"nnunet_id": "demo", "series_folders": "ct", "use_folds": "0", "tta": "false"}
    ok = running.client.post("/infer", params=params, headers=AUTH)
    assert ok.status_code == 200, ok.text
    job = running.journal.get_job(ok.json()["job_id"])
    assert job is not None and dict(job.args) == {"use_folds": [0], "tta": False, "series_folders": ["ct"]}
    bad = running.client.post("/infer", params={**params, "tta": "maybe"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "tta"]


def test_an_upload_of_two_series_is_422_and_leaves_nothing_waiting(running: RunningNode) -> None:
    first = phantom_series(running.root / "two" / "a", slices=4, seed=21)
    second = phantom_series(running.root / "two" / "b", slices=4, seed=22)
    r = post_file(running, archives.zip_of(first + second))
    assert r.status_code == 422 and "2 image series" in json.dumps(r.json()["detail"])
    for files in (first, second):
        uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        series = running.journal.get_series(uid)
        assert series is not None and series.state == SeriesState.UNMATCHED  # retention will remove it
