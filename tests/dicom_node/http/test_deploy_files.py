"""The deploy/ examples stay in step with the code: the example /etc config and rules validate, and the
systemd unit runs ``serve`` on the config the layout provides."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dicom_node.config import NodeConfig, load_rules_file

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_the_example_etc_config_and_rules_validate() -> None:
    config = NodeConfig.model_validate(yaml.safe_load((DEPLOY / "etc/dicom-node/node.yaml").read_text()))
    assert config.http is not None and config.http.token and config.logging.format == "json"
    assert [r.name for r in load_rules_file(DEPLOY / "etc/dicom-node/rules.yaml")] == ["ct-abdomen"]


def test_the_unit_serves_the_config_of_the_etc_layout() -> None:
    unit = (DEPLOY / "dicom-node.service").read_text()
    [exec_start] = re.findall(r"^ExecStart=(.+)$", unit, flags=re.M)
    config_path = exec_start.split("--config ")[1].strip()
    assert exec_start.split()[1] == "serve"
    assert (DEPLOY / "etc" / Path(config_path).relative_to("/etc")).is_file()
    node = yaml.safe_load((DEPLOY / "etc/dicom-node/node.yaml").read_text())
    assert f"ReadWritePaths={node['node']['storage_dir']}" in unit
