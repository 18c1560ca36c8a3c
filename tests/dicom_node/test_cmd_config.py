"""``dicom-node config validate PATH``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from dicom_node.cli import main
from dicom_node.commands.config_cmd import validate
from dicom_node.demo.bundled import demo_model_dir

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
node: {ae_title: NNUNET}
model_spec: spec.yaml
destinations:
  pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
  archive: {ae_title: ARCHIVE, host: 127.0.0.1, port: 104}
rules:
  - {name: ct, match: {modality: CT}, models: [demo, liver-alias], destinations: [pacs]}
  - {name: mr, match: {modality: MR}, models: liver, destinations: [archive]}
"""


class Resolved:
    def __init__(self, model_id: str) -> None:
        self.id = model_id


class StubCatalog:
    """Stands in for inference.spec.ModelCatalog: ids and aliases, unknown names raise."""

    def __init__(self) -> None:
        self.names = {"demo": "demo", "liver": "liver", "liver-alias": "liver"}

    def resolve(self, name: str) -> Resolved:
        if name not in self.names:
            raise LookupError(f"unknown model {name!r}")
        return Resolved(self.names[name])


def stub_loader(seen: list[Path]) -> Any:
    def load(path: Path) -> StubCatalog:
        seen.append(path)
        return StubCatalog()

    return load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_counts_rules_destinations_and_models(tmp_path: Path) -> None:
    seen: list[Path] = []
    errors, notes, summary = validate(write(tmp_path, CONFIG), stub_loader(seen))
    assert errors == []
    assert summary == "OK: 2 rules, 2 destinations, 2 models"  # liver-alias is liver
    assert seen == [(tmp_path / "spec.yaml").resolve()]  # relative to the config file
    assert notes == []


def test_unknown_model_and_destination_are_listed_one_per_line(tmp_path: Path) -> None:
    text = CONFIG.replace("models: liver,", "models: spleen,")
    errors, _, summary = validate(write(tmp_path, text), stub_loader([]))
    assert summary == ""
    assert len(errors) == 1 and "rule 'mr': model 'spleen' not in the model spec" in errors[0]
    text = CONFIG.replace("[archive]", "[archive, cloud]")
    errors, _, _ = validate(write(tmp_path, text), stub_loader([]))
    assert any("rule 'mr': unknown destination 'cloud'" in e for e in errors)


def test_broken_model_spec_is_an_error(tmp_path: Path) -> None:
    def failing(path: Path) -> StubCatalog:
        raise ValueError(f"{path}: model 'demo': folder missing")

    errors, _, _ = validate(write(tmp_path, CONFIG), failing)
    assert errors and "model 'demo': folder missing" in errors[0]


def test_rule_that_can_never_match_is_a_warning(tmp_path: Path) -> None:
    text = CONFIG.replace("match: {modality: CT}", "match: {called_ae: SOMEONE_ELSE}")
    errors, notes, summary = validate(write(tmp_path, text), stub_loader([]))
    assert errors == [] and summary.startswith("OK")
    assert any("rule 'ct' can never match" in n for n in notes)


def test_cli_ok_without_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "destinations:\n  pacs: {ae_title: P, host: 127.0.0.1, port: 104}\nrules: []\n")
    assert main(["config", "validate", str(path)]) == 0
    assert "OK: 0 rules, 1 destinations, 0 models" in capsys.readouterr().out


def test_cli_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path, CONFIG.replace("node: {ae_title: NNUNET}", "node: {ae_title: NNUNET, colour: red}")
    )
    assert main(["config", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "node.colour: unknown key" in out.splitlines()
    assert "OK" not in out
    assert main(["config", "validate", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().out


@pytest.mark.skipif(
    importlib.util.find_spec("inference.spec") is None or not demo_model_dir().is_dir(),
    reason="inference.spec or the demo model not in this checkout yet",
)
def test_demo_config_validates_with_the_real_model_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(REPO / "config" / "demo.yaml")]) == 0
    assert "OK: 1 rules, 1 destinations, 1 models" in capsys.readouterr().out
