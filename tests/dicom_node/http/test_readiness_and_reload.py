"""Readiness fails with the failing checks named, and the rules reload endpoint applies a changed rules
file (or refuses a broken one and keeps the rules in effect). A node with a random-weights model and
its config loaded from a file; no inference runs here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from dicom_node.config import load_config
from dicom_node.node import Node
from tests.dicom_node.http.conftest import AUTH, http_config
from tests.support.random_model import write_random_spec
from tests.support.tools import free_port


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
