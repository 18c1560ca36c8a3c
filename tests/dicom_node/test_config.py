"""The YAML contract of the node configuration (issue 3, section Configuration)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from dicom_node.config import (
    DestinationConfig,
    NodeConfig,
    RuleConfig,
    config_from_mapping,
    load_config,
    load_rules_file,
)
from dicom_node.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

ISSUE_YAML = """\
node:
  ae_title: NNUNET            # the called AE titles this node answers to: one string or a list
  host: 0.0.0.0
  port: 11112
  storage_dir: ./var          # spool, journal, outputs
  allowed_calling_aes: []     # empty: any calling AE; otherwise others are rejected (reason 0x03)
model_spec: model-serve-spec.yaml
destinations:
  pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
rules:                        # ordered; first match wins unless a rule says continue
  - name: ct-demo
    match:                    # every given field must match; strings are Python regexes, full match
      called_ae: NNUNET
      calling_ae: "ORTHANC|STORESCU"
      modality: CT
      series_description: "(?i).*phantom.*"
      tags: {BodyPartExamined: "ABDOMEN|CHEST"}   # any other keyword
    models: [demo]            # one id/alias, or several for a cascade
    destinations: [pacs]
    series_quiet_seconds: 5   # completion timer for this rule
"""


def write(folder: Path, text: str, name: str = "node.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_issue_yaml_loads_with_every_value(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ISSUE_YAML))
    assert cfg.node.ae_title == ["NNUNET"]
    assert cfg.node.port == 11112
    assert cfg.node.allowed_calling_aes == []
    assert cfg.destinations["pacs"].ae_title == "ORTHANC"
    assert cfg.destinations["pacs"].port == 4242
    (rule,) = cfg.rules
    assert rule.name == "ct-demo"
    assert rule.models == ["demo"]
    assert rule.destinations == ["pacs"]
    assert rule.series_quiet_seconds == 5
    patterns = rule.match.patterns()
    assert set(patterns) == {
        "called_ae",
        "calling_ae",
        "modality",
        "series_description",
        "tags.BodyPartExamined",
    }
    assert patterns["calling_ae"].pattern == "ORTHANC|STORESCU"
    assert cfg.config_path == (tmp_path / "node.yaml").resolve()


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    path = write(sub, ISSUE_YAML)
    monkeypatch.chdir(tmp_path)  # somewhere else than the config's folder
    cfg = load_config(Path("etc/node.yaml"))
    assert cfg.node.storage_dir == (sub / "var").resolve()
    assert cfg.model_spec == (sub / "model-serve-spec.yaml").resolve()
    assert cfg.watched_rules_path == path.resolve()


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    text = ISSUE_YAML.replace("./var", str(tmp_path / "store")).replace(
        "model-serve-spec.yaml", "/opt/spec.yaml"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.node.storage_dir == tmp_path / "store"
    assert cfg.model_spec == Path("/opt/spec.yaml")


def test_ae_title_string_or_list(tmp_path: Path) -> None:
    one = load_config(write(tmp_path, "node: {ae_title: NNUNET}\n", "one.yaml"))
    many = load_config(write(tmp_path, "node: {ae_title: [NNUNET, SEG_AI]}\n", "many.yaml"))
    assert one.node.ae_title == ["NNUNET"]
    assert many.node.ae_title == ["NNUNET", "SEG_AI"]


@pytest.mark.parametrize("title", ["THIS_TITLE_IS_TOO_LONG", "BACK\\\\SLASH", "''", "[]"])
def test_invalid_ae_titles_are_refused(tmp_path: Path, title: str) -> None:
    msg = error_of(write(tmp_path, f"node: {{ae_title: {title}}}\n"))
    assert "node.ae_title" in msg


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, ISSUE_YAML + "colour: blue\n"))
    assert "colour: unknown key" in msg
    msg = error_of(
        write(tmp_path, ISSUE_YAML.replace("    models: [demo]", "    model: demo\n    models: [demo]"))
    )
    assert "rules[0] (ct-demo).model: unknown key" in msg
    msg = error_of(write(tmp_path, ISSUE_YAML.replace("modality: CT", "modalty: CT")))
    assert "rules[0] (ct-demo).match.modalty: unknown key" in msg


def test_config_path_cannot_be_set_from_the_file(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "config_path: /etc/passwd\n"))
    assert "config_path: unknown key" in msg


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, ISSUE_YAML + "destinations: {}\n"))
    assert "duplicate key 'destinations'" in msg


def test_bad_regex_names_rule_and_field(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, ISSUE_YAML.replace('"(?i).*phantom.*"', '"(unclosed"')))
    assert "rules[0] (ct-demo).match" in msg
    assert "series_description: invalid regex '(unclosed'" in msg
    msg = error_of(write(tmp_path, ISSUE_YAML.replace('"ABDOMEN|CHEST"', '"*bad"')))
    assert "tags.BodyPartExamined: invalid regex" in msg


def test_unknown_tag_keyword_and_sequences_are_refused(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, ISSUE_YAML.replace("BodyPartExamined", "BodyPartExamed")))
    assert "'BodyPartExamed' is not a DICOM keyword" in msg
    msg = error_of(write(tmp_path, ISSUE_YAML.replace("BodyPartExamined", "ReferencedImageSequence")))
    assert "is a sequence" in msg


def test_integer_patterns_are_read_as_text(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, ISSUE_YAML.replace('{BodyPartExamined: "ABDOMEN|CHEST"}', "{SeriesNumber: 3}"))
    )
    assert cfg.rules[0].match.patterns()["tags.SeriesNumber"].pattern == "3"


def test_unknown_destination_names_rule_and_destination(tmp_path: Path) -> None:
    msg = error_of(
        write(tmp_path, ISSUE_YAML.replace("destinations: [pacs]", "destinations: [pacs, archive]"))
    )
    assert "rule 'ct-demo': unknown destination 'archive' (configured: pacs)" in msg


def test_empty_rules_and_destinations_are_valid(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "node: {ae_title: NNUNET}\ndestinations: {}\nrules: []\n"))
    assert cfg.rules == []
    assert cfg.destinations == {}
    assert cfg.model_spec is None
    assert load_config(write(tmp_path, "", "empty.yaml")).node.ae_title == ["NNUNET"]


def test_rules_need_a_model_spec(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, ISSUE_YAML.replace("model_spec: model-serve-spec.yaml\n", "")))
    assert "model_spec" in msg


def test_duplicate_rule_names(tmp_path: Path) -> None:
    text = ISSUE_YAML + "  - {name: ct-demo, models: demo}\n"
    assert "rule 'ct-demo': duplicate rule name" in error_of(write(tmp_path, text))


def test_continue_alias_and_models_as_string(tmp_path: Path) -> None:
    text = ISSUE_YAML.replace("    models: [demo]", "    models: demo\n    continue: true")
    rule = load_config(write(tmp_path, text)).rules[0]
    assert rule.models == ["demo"]
    assert rule.continue_ is True
    assert rule.model_dump(by_alias=True)["continue"] is True


def test_rules_file_is_loaded_relative_and_validated(tmp_path: Path) -> None:
    write(tmp_path, "- {name: a, models: demo, destinations: [pacs]}\n", "rules.yaml")
    base = "model_spec: spec.yaml\ndestinations: {pacs: {ae_title: P, host: h, port: 104}}\n"
    cfg = load_config(write(tmp_path, base + "rules_file: rules.yaml\n"))
    assert [r.name for r in cfg.rules] == ["a"]
    assert cfg.rules_file == (tmp_path / "rules.yaml").resolve()
    assert cfg.watched_rules_path == cfg.rules_file
    write(tmp_path, "- {name: a, models: demo, destinations: [nowhere]}\n", "rules.yaml")
    assert "unknown destination 'nowhere'" in error_of(tmp_path / "node.yaml")


def test_rules_and_rules_file_together_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "[]\n", "rules.yaml")
    assert "either 'rules' or 'rules_file'" in error_of(
        write(tmp_path, ISSUE_YAML + "rules_file: rules.yaml\n")
    )


def test_rules_file_errors_name_the_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "- {name: a, models: demo}\n- {name: b, match: {modality: CT}}\n", "rules.yaml")
    with pytest.raises(ConfigError) as info:
        load_rules_file(path)
    assert "rules[1] (b).models: " in str(info.value)
    write(tmp_path, "rules:\n  - {name: a, models: demo}\n", "rules.yaml")
    assert [r.name for r in load_rules_file(path)] == ["a"]


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {ae_title: [NNUNET}\n")
    msg = error_of(path)
    assert str(path) in msg and "not valid YAML" in msg


def test_with_rules_validates_like_a_load(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ISSUE_YAML))
    bad = RuleConfig.model_validate({"name": "x", "models": ["demo"], "destinations": ["nope"]})
    with pytest.raises(ConfigError, match="unknown destination"):
        cfg.with_rules([bad])
    new = cfg.with_rules([])
    assert new.rules == [] and new.config_path == cfg.config_path


def test_mapping_without_file(tmp_path: Path) -> None:
    cfg = config_from_mapping({"node": {"storage_dir": "store"}}, base_dir=tmp_path)
    assert cfg.node.storage_dir == (tmp_path / "store").resolve()
    assert isinstance(cfg, NodeConfig) and cfg.config_path is None


@pytest.mark.parametrize("name", ["node.example.yaml", "demo.yaml"])
def test_example_configs_load(name: str) -> None:
    cfg = load_config(REPO / "config" / name)
    assert cfg.rules and cfg.destinations
    assert all(d in cfg.destinations for r in cfg.rules for d in r.destinations)


def test_example_rules_file_loads() -> None:
    rules = load_rules_file(REPO / "config" / "rules.example.yaml")
    assert [r.name for r in rules] == ["ct-abdomen", "ct-thin-slices"]


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        keys.append(info.alias or name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_keys(annotation))
    return keys


def test_every_key_is_documented() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    models: list[type[BaseModel]] = [NodeConfig, DestinationConfig, RuleConfig]
    missing = sorted({k for m in models for k in _keys(m) if f"| `{k}` |" not in doc})
    assert missing == [], f"keys missing from docs/configuration.md: {missing}"


def test_full_example_shows_every_key() -> None:
    text = (REPO / "config" / "node.example.yaml").read_text(encoding="utf-8")
    models: list[type[BaseModel]] = [NodeConfig, DestinationConfig, RuleConfig]
    missing = sorted({k for m in models for k in _keys(m) if f"{k}:" not in text})
    assert missing == [], f"keys missing from config/node.example.yaml: {missing}"


def test_destination_needs_host_and_port(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, 'destinations: {pacs: {ae_title: P, host: "", port: 0}}\n'))
    assert "destinations.pacs.host" in msg and "destinations.pacs.port" in msg


def test_tls_files_are_read_at_load_relative_to_the_config(tmp_path: Path) -> None:
    from tests.support.certificates import make_pki

    pki = make_pki(tmp_path / "etc" / "pki")
    base = ISSUE_YAML.replace(
        ISSUE_YAML.splitlines(keepends=True)[5],
        "  tls: {certificate: pki/server.pem, private_key: pki/server.key, ca_certificates: pki/ca.pem,"
        " require_client_certificate: true}\n",
    )
    cfg = load_config(write(tmp_path / "etc", base))
    assert cfg.node.tls is not None and cfg.node.tls.certificate == pki.server.certificate.resolve()

    mismatched = base.replace("private_key: pki/server.key", "private_key: pki/client.key")
    assert "node.tls" in error_of(write(tmp_path / "etc", mismatched))
    missing = base.replace("pki/ca.pem", "pki/nowhere.pem")
    assert "node.tls" in error_of(write(tmp_path / "etc", missing))
    no_cas = base.replace(" ca_certificates: pki/ca.pem,", "")
    assert "require_client_certificate needs ca_certificates" in error_of(write(tmp_path / "etc", no_cas))
    half = base.replace(
        "pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}",
        "pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242, tls: {certificate: pki/client.pem}}",
    )
    assert "certificate and private_key go together" in error_of(write(tmp_path / "etc", half))


def test_calling_ae_hosts_are_addresses_or_networks(tmp_path: Path) -> None:
    ok = ISSUE_YAML.replace(
        "  allowed_calling_aes: []",
        "  calling_ae_hosts: {CT1: [10.0.0.5, 10.1.0.0/16, '::1']}\n  allowed_calling_aes: []",
    )
    cfg = load_config(write(tmp_path, ok))
    assert [str(n) for n in cfg.node.calling_ae_hosts["CT1"]] == ["10.0.0.5/32", "10.1.0.0/16", "::1/128"]
    for bad in ("[ct.example.org]", "[10.0.0.5/8]", "[]"):
        text = ISSUE_YAML.replace(
            "  allowed_calling_aes: []", f"  calling_ae_hosts: {{CT1: {bad}}}\n  allowed_calling_aes: []"
        )
        assert "calling_ae_hosts" in error_of(write(tmp_path, text))


def test_a_per_peer_pending_limit_above_the_total_is_refused(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "node: {max_pending_connections: 2, max_pending_per_peer: 3}\n"))
    assert "max_pending_per_peer" in msg


def test_model_serve_spec_variable_is_the_default_model_spec(tmp_path: Path) -> None:
    from dicom_node.config import config_from_mapping

    spec = tmp_path / "spec.yaml"
    cfg = config_from_mapping({}, base_dir=tmp_path, environ={"MODEL_SERVE_SPEC": str(spec)})
    assert cfg.model_spec == spec
    explicit = config_from_mapping(
        {"model_spec": "mine.yaml"}, base_dir=tmp_path, environ={"MODEL_SERVE_SPEC": str(spec)}
    )
    assert explicit.model_spec == tmp_path / "mine.yaml"  # the configuration wins
    assert config_from_mapping({}, base_dir=tmp_path, environ={}).model_spec is None
