"""nnunet_serve's service endpoints and the token, against a running node (real uvicorn, httpx)."""

from __future__ import annotations

import pytest

from tests.dicom_node.http.conftest import AUTH, RunningNode

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


def test_health_answers_while_the_node_runs(running: RunningNode) -> None:
    assert running.client.get("/healthz").json() == {"status": "ok"}


def test_readiness_reports_each_check_of_a_healthy_node(running: RunningNode) -> None:
    r = running.client.get("/readyz")
    body = r.json()
    assert r.status_code == 200, body
    assert body["failing"] == []
    assert set(body["checks"]) == {"journal", "dicom", "models", "device"}
    assert str(running.node.port) in body["checks"]["dicom"]["detail"]
    assert body["device"] == "cpu" and body["gpu_available"] is False and body["models_loaded"] is True


def test_readiness_probes_leave_no_association_behind(running: RunningNode) -> None:
    for _ in range(5):
        assert running.client.get("/readyz").status_code == 200
    assert running.node.server is not None and running.node.server.active_associations() == []


def test_model_info_describes_labels_segments_and_channels(running: RunningNode) -> None:
    info = running.client.get("/model_info").json()
    demo = info["demo"]
    assert "phantom" in demo["aliases"]
    assert demo["labels"] == {"1": "body", "2": "liver", "3": "kidney"}
    assert [s["type"]["value"] for s in demo["segments"]] == ["38266002", "10200004", "64033007"]
    assert demo["input_channels"] == 1 and demo["nnunet_path"].endswith("3d_fullres")


def test_model_info_clean_hides_server_paths_and_adds_descriptions(running: RunningNode) -> None:
    demo = running.client.get("/model_info_clean").json()["demo"]
    assert "nnunet_path" not in demo
    assert "Liver" in demo["description"] and "Kidney" in demo["description_long"]


def test_request_params_is_the_schema_of_the_request(running: RunningNode) -> None:
    schema = running.client.get("/request-params").json()
    assert {"nnunet_id", "use_folds", "tta", "proba_threshold", "series_folders"} <= set(schema["properties"])
    assert schema["required"] == ["nnunet_id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/jobs/1/retry"),
        ("POST", "/deliveries/1/resend"),
        ("POST", "/series/1.2.3/rerun"),
        ("POST", "/rules/reload"),
        ("GET", "/expire"),
        ("POST", "/infer_file"),
        ("POST", "/infer"),
        ("POST", "/infer_orthanc"),
        ("GET", "/download/1"),
    ],
)
def test_endpoints_that_change_or_reveal_data_need_the_token(
    running: RunningNode, method: str, path: str
) -> None:
    missing = running.client.request(method, path)
    wrong = running.client.request(method, path, headers={"Authorization": "Bearer not-the-token-at-all"})
    basic = running.client.request(method, path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    for answer in (missing, wrong, basic):
        assert answer.status_code == 401, (path, answer.text)
        assert answer.headers["www-authenticate"] == "Bearer"


def test_read_only_views_need_no_token(running: RunningNode) -> None:
    for path in ("/jobs", "/metrics", "/", "/dashboard/state", "/model_info", "/readyz"):
        assert running.client.get(path).status_code == 200, path


def test_expire_drops_the_warm_predictors(running: RunningNode) -> None:
    [executor] = running.node.executors
    assert len(executor.cache) >= 1  # type: ignore[attr-defined]
    r = running.client.get("/expire", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert len(executor.cache) == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/999999"),
        ("GET", "/series/1.2.999"),
        ("GET", "/download/999999"),
        ("GET", "/jobs/999999/preview.png"),
        ("POST", "/jobs/999999/retry"),
        ("POST", "/deliveries/999999/resend"),
        ("POST", "/series/1.2.999/rerun"),
    ],
)
def test_unknown_ids_are_404_naming_them(running: RunningNode, method: str, path: str) -> None:
    r = running.client.request(method, path, headers=AUTH)
    assert r.status_code == 404, r.text
    assert "999" in r.json()["detail"]
