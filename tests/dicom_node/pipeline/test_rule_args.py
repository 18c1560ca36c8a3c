"""Rule ``args`` are checked against the models a rule names when the configuration loads
(``dicom-node config validate``, ``serve``) and on every hot reload; a refused reload keeps the rules
in effect. A real model spec (model folders with one fold, no inference)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dicom_node.cli import main
from dicom_node.commands.config_cmd import validate
from dicom_node.config import load_config
from dicom_node.errors import ConfigError
from dicom_node.pipeline.routing import RuleSet
from dicom_node.pipeline.rules_watch import RulesWatcher, watch_config_rules
from inference.spec import ModelCatalog, load_model_spec
from tests.support.fake_model import make_model_folder, write_spec
from tests.support.tools import wait_for

CONFIG = """\
node: {{ae_title: NNUNET}}
model_spec: spec.yaml
destinations:
  pacs: {{ae_title: PACS, host: 127.0.0.1, port: 104}}
rules:
  - {{name: ct, match: {{modality: CT}}, models: [liver], destinations: [pacs]{args}}}
  - {{name: mr, match: {{modality: MR}}, models: [liver], destinations: [pacs]}}
"""

#: Each case: the rule's args (YAML flow mapping) and what the one problem line must say.
INVALID = [
    ("{colour: red}", "rule 'ct': args.colour: unknown parameter"),
    ("{use_folds: [7]}", "rule 'ct': args.use_folds: model 'liver': fold 7 not found"),
    ("{tta: maybe}", "rule 'ct': args.tta: Input should be a valid boolean"),
    (
        "{checkpoint_name: checkpoint_best.pth}",
        "rule 'ct': args.checkpoint_name: model 'liver': fold_0 has no",
    ),
    ("{series_folders: [['from:spleen=1']]}", "rule 'ct': args.series_folders: unknown model 'spleen'"),
    (
        "{proba_threshold: [0.5, 0.6]}",
        "rule 'ct': args.proba_threshold: 2 per-stage values but the cascade has 1",
    ),
]


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "liver" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    make_model_folder(folder, folds=(0,), size=100)
    two = tmp_path / "models" / "mr2" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    make_model_folder(two, channels=("T2", "ADC"), folds=(0,), size=100)
    return write_spec(
        tmp_path / "spec.yaml",
        {
            "model_folder": "models",
            "models": [
                {"id": "liver", "rel_path": "liver/nnUNetTrainer__nnUNetPlans__3d_fullres"},
                {"id": "mr2", "rel_path": "mr2/nnUNetTrainer__nnUNetPlans__3d_fullres"},
            ],
        },
    )


def config_text(args: str | None) -> str:
    return CONFIG.format(args=f", args: {args}" if args else "")


@pytest.mark.parametrize(("args", "expected"), INVALID)
def test_config_validate_refuses_invalid_rule_args(
    tmp_path: Path, spec: Path, args: str, expected: str
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(config_text(args), encoding="utf-8")
    errors, _, summary = validate(path, load_model_spec)
    assert summary == ""
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors


def test_every_problem_of_a_rule_gets_its_own_line(tmp_path: Path, spec: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(config_text("{colour: red, tta: maybe, tile_step_size: 2}"), encoding="utf-8")
    errors, _, _ = validate(path, load_model_spec)
    keys = sorted(line.split(":")[1].strip() for line in errors)
    assert keys == ["args.colour", "args.tile_step_size", "args.tta"], errors


def test_valid_rule_args_pass(tmp_path: Path, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        config_text(
            "{use_folds: [0], tta: true, proba_threshold: 0.4,"
            " save_rt_struct_output: true, save_proba_map: true}"
        ),
        encoding="utf-8",
    )
    assert main(["config", "validate", str(path)]) == 0
    assert "OK: 2 rules" in capsys.readouterr().out


def test_two_channel_model_on_a_one_series_rule_is_refused_at_load(tmp_path: Path, spec: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        config_text(None).replace(
            "models: [liver], destinations: [pacs]}\n", "models: [mr2], destinations: [pacs]}\n"
        ),
        encoding="utf-8",
    )
    errors, _, _ = validate(path, load_model_spec)
    assert any(e.startswith("rule 'mr': model mr2 needs 2 input series") for e in errors), errors


def test_cli_prints_one_line_per_problem_and_exits_1(
    tmp_path: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(config_text("{use_folds: [7], tta: maybe}"), encoding="utf-8")
    assert main(["config", "validate", str(path)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("rule 'ct'")]
    assert len(lines) == 2


def test_serve_refuses_the_same_rules(tmp_path: Path, spec: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(config_text("{use_folds: [7]}"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rule 'ct': args.use_folds"):
        RuleSet.from_config(load_config(path), load_model_spec(spec))


class Applied:
    def __init__(self) -> None:
        self.sets: list[list[str]] = []

    def __call__(self, rules: RuleSet) -> None:
        self.sets.append([str(r.args) for r in rules])


def test_hot_reload_refuses_invalid_args_and_keeps_the_rules(
    tmp_path: Path, spec: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(config_text("{tta: true}"), encoding="utf-8")
    config = load_config(path)
    catalog: ModelCatalog = load_model_spec(spec)
    applied = Applied()
    caplog.set_level(logging.INFO, logger="dicom_node.pipeline.rules_watch")
    watcher: RulesWatcher = watch_config_rules(config, applied, catalog, debounce_seconds=0.05)
    for args, expected in INVALID:
        path.write_text(config_text(args), encoding="utf-8")
        assert watcher.check_now() is False
        refusals = [r.getMessage() for r in caplog.records if "refused new rules" in r.getMessage()]
        assert refusals and expected in refusals[-1]
    assert applied.sets == []  # the rules in effect stay
    path.write_text(config_text("{tta: false}"), encoding="utf-8")
    watcher.start()
    try:
        path.write_text(config_text("{use_folds: [0]}"), encoding="utf-8")
        wait_for(lambda: bool(applied.sets), timeout=10, what="valid rules applied")
    finally:
        watcher.stop()
    assert applied.sets[-1][0] == str({"use_folds": [0]})


def test_channels_give_the_series_count_the_models_need(tmp_path: Path, spec: Path) -> None:
    path = tmp_path / "node.yaml"
    two = (
        "models: [mr2], destinations: [pacs],"
        " channels: [{series_description: T2}, {series_description: ADC}]}\n"
    )
    one = "models: [mr2], destinations: [pacs], channels: [{series_description: T2}]}\n"
    text = config_text(None).replace("models: [liver], destinations: [pacs]}\n", two)
    path.write_text(text, encoding="utf-8")
    assert validate(path, load_model_spec)[0] == []
    path.write_text(
        config_text(None).replace("models: [liver], destinations: [pacs]}\n", one), encoding="utf-8"
    )
    errors, _, _ = validate(path, load_model_spec)
    assert any(e.startswith("rule 'mr': model mr2 needs 2 input series, the request has 1") for e in errors)


def test_a_rule_with_channels_matches_only_series_fitting_a_channel() -> None:
    from pydicom.dataset import Dataset

    from dicom_node.config import RuleConfig
    from dicom_node.pipeline.routing import SeriesFacts, check_rule

    rule = RuleConfig.model_validate(
        {
            "name": "p",
            "models": ["x"],
            "channels": [{"series_description": "(?i)t2.*"}, {"tag": "ImageType", "regex": ".*ADC.*"}],
        }
    )

    def facts(description: str, image_type: str) -> SeriesFacts:
        header = Dataset()
        header.SeriesDescription = description
        header.ImageType = image_type.split("\\")
        return SeriesFacts.from_dataset(header, called_ae="N", calling_ae="S")

    assert check_rule(rule, facts("t2_tse_tra", "ORIGINAL\\PRIMARY")) == ()
    assert check_rule(rule, facts("ep2d_diff", "DERIVED\\PRIMARY\\ADC")) == ()
    [failure] = check_rule(rule, facts("localizer", "ORIGINAL\\PRIMARY"))
    assert failure.field == "channels" and "(?i)t2.*" in failure.pattern


def test_a_rule_with_channels_completes_on_the_study_and_refuses_complete_series(
    tmp_path: Path, spec: Path
) -> None:
    from pydicom.dataset import Dataset

    from dicom_node.pipeline.routing import SeriesFacts, route, routing_settings

    path = tmp_path / "node.yaml"
    rule = (
        "models: [mr2], destinations: [pacs], channels: [{series_description: T2}, {series_description: ADC}]"
    )
    text = config_text(None).replace("models: [liver], destinations: [pacs]}\n", rule + "}\n")
    path.write_text(text, encoding="utf-8")
    assert validate(path, load_model_spec)[0] == []
    [_, mr] = load_config(path).rules
    assert mr.complete == "study"
    header = Dataset()
    header.Modality, header.SeriesDescription = "MR", "T2"
    settings = routing_settings(route(SeriesFacts.from_dataset(header, called_ae="N", calling_ae="S"), [mr]))
    assert settings.complete_study and not settings.use_expected_count
    path.write_text(
        config_text(None).replace("models: [liver], destinations: [pacs]}\n", rule + ", complete: series}\n"),
        encoding="utf-8",
    )
    errors, _, _ = validate(path, load_model_spec)
    assert any("'channels' take several series of one study" in e and "complete: series" in e for e in errors)
