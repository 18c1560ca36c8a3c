"""Readiness fails with the failing checks named, and the rules reload endpoint applies a changed rules
file (or refuses a broken one and keeps the rules in effect). A node with a random-weights model and
its config loaded from a file; no inference runs here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicom_node.config import config_from_mapping, load_config
from dicom_node.node import Node
from tests.dicom_node.http.conftest import AUTH, http_config
from tests.support.instances import make_ct
from tests.support.random_model import write_random_spec
from tests.support.tools import free_port, wait_for


@pytest.fixture
def node_with_file(tmp_path: Path) -> Iterator[tuple[Node, httpx.Client, Path]]:
    spec = write_random_spec(tmp_path, {"demo": {}})
    cfg = http_config(tmp_path, spec, free_port())
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    node = Node(load_config(path))
    node.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30) as client:
            yield node, client, path
    finally:
        node.stop()


def test_readiness_names_each_failing_check(node_with_file: tuple[Node, httpx.Client, Path]) -> None:
    node, client, _ = node_with_file
    assert client.get("/readyz").status_code == 200
    model = node.catalog.resolve("demo")
    (model.model_dir / "fold_0" / "checkpoint_final.pth").unlink()
    assert node.server is not None
    node.server.stop()
    r = client.get("/readyz")
    body = r.json()
    assert r.status_code == 503
    assert sorted(body["failing"]) == ["dicom", "models"]
    assert "checkpoint_final.pth is missing" in body["checks"]["models"]["detail"]
    assert body["checks"]["journal"]["ok"] and body["checks"]["device"]["ok"]


def test_rules_reload_applies_the_file_and_refuses_a_broken_one(
    node_with_file: tuple[Node, httpx.Client, Path],
) -> None:
    node, client, path = node_with_file
    cfg = yaml.safe_load(path.read_text())
    cfg["rules"][0]["name"] = "renamed-rule"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = client.post("/rules/reload", headers=AUTH)
    assert r.status_code == 200 and r.json()["rules"] == ["renamed-rule"]
    assert node.rules.names == ["renamed-rule"]

    cfg["rules"][0]["models"] = ["no-such-model"]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = client.post("/rules/reload", headers=AUTH)
    assert r.status_code == 422 and "no-such-model" in r.json()["detail"]
    assert node.rules.names == ["renamed-rule"]
    assert [rule["name"] for rule in client.get("/rules").json()["rules"]] == ["renamed-rule"]


def test_the_dashboard_state_shows_an_open_association_and_a_series_waiting(tmp_path: Path) -> None:
    spec = write_random_spec(tmp_path, {"demo": {}})
    cfg = http_config(tmp_path, spec, free_port())
    cfg["rules"][0]["series_quiet_seconds"] = 600  # the series waits while the test looks at it
    with Node(config_from_mapping(cfg, base_dir=tmp_path)) as node:
        ae = AE(ae_title="HOLDSCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="NNUNET")
        assert assoc.is_established
        try:
            series_uid = generate_uid()
            for i in range(2):
                ds = make_ct(series_uid=series_uid, seed=i, Modality="CT", SeriesDescription="Phantom CT")
                assert assoc.send_c_store(ds).Status == 0
            with httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=30) as client:

                def waiting() -> dict[str, Any] | None:
                    state = client.get("/dashboard/state").json()
                    rows = [w for w in state["waiting"] if w["series_uid"] == series_uid]
                    return state if rows and rows[0]["seconds_left"] is not None else None

                state = wait_for(waiting, timeout=30, what="the series routed and waiting")
                [row] = [w for w in state["waiting"] if w["series_uid"] == series_uid]
                assert row["instances"] == 2 and row["rules"] == ["ct-demo"]
                assert 0 < row["seconds_left"] <= 600
                assert [a["calling_ae"] for a in state["associations"]] == ["HOLDSCU"]
                page = client.get("/").text
                assert "HOLDSCU" in page and "Phantom CT" in page
        finally:
            assoc.release()
