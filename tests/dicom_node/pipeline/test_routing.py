"""Routing rules: full-match regexes on each field, tags, order, continue, disabled, explanations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from dicom_node.config import RuleConfig, config_from_mapping
from dicom_node.errors import ConfigError
from dicom_node.pipeline.routing import RuleSet, SeriesFacts, job_specs, route, routing_settings
from dicom_node.storage.journal import JobSpec


def rule(name: str, match: dict[str, Any] | None = None, **extra: Any) -> RuleConfig:
    data: dict[str, Any] = {"name": name, "models": ["demo"], "match": match or {}}
    data.update(extra)
    return RuleConfig.model_validate(data)


def header(**values: Any) -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    ds.SeriesDescription = "Phantom CT abdomen"
    ds.BodyPartExamined = "ABDOMEN"
    for key, value in values.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def facts(called: str = "NNUNET", calling: str = "STORESCU", **values: Any) -> SeriesFacts:
    return SeriesFacts.from_dataset(header(**values), called_ae=called, calling_ae=calling)


def names(rules: list[RuleConfig], f: SeriesFacts) -> list[str]:
    return route(f, rules).rule_names


def test_facts_from_header() -> None:
    f = facts(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], SliceThickness="1.50", SeriesNumber="003")
    assert (f.called_ae, f.calling_ae, f.modality) == ("NNUNET", "STORESCU", "CT")
    assert f.series_description == "Phantom CT abdomen"
    assert f.tag("ImageType") == "ORIGINAL\\PRIMARY\\AXIAL"
    assert f.tag("SliceThickness") == "1.50"  # raw text, not the float 1.5
    assert f.tag("SeriesNumber") == "003"
    assert f.tag("StudyDate") == ""  # missing
    assert facts(SeriesDescription=None).series_description == ""


@pytest.mark.parametrize(
    ("field", "pattern", "good", "bad"),
    [
        ("called_ae", "NNUNET|SEG", {"called": "SEG"}, {"called": "OTHER"}),
        ("calling_ae", "ORTHANC|STORESCU", {"calling": "ORTHANC"}, {"calling": "MODALITY1"}),
        ("modality", "CT", {"Modality": "CT"}, {"Modality": "MR"}),
        ("series_description", ".*[Pp]hantom.*", {}, {"SeriesDescription": "Head"}),
    ],
)
def test_each_field(field: str, pattern: str, good: dict[str, Any], bad: dict[str, Any]) -> None:
    rules = [rule("r", {field: pattern})]
    assert names(rules, facts(**good)) == ["r"]
    decision = route(facts(**bad), rules)
    assert decision.matched == []
    (failure,) = decision.explanations[0].failures
    assert failure.field == field and failure.pattern == pattern


def test_tags_condition() -> None:
    rules = [rule("r", {"tags": {"BodyPartExamined": "ABDOMEN|CHEST", "SliceThickness": "1\\.50?"}})]
    assert names(rules, facts(SliceThickness="1.5")) == ["r"]
    decision = route(facts(BodyPartExamined="HEAD", SliceThickness="1.5"), rules)
    assert [(f.field, f.actual) for f in decision.explanations[0].failures] == [
        ("tags.BodyPartExamined", "HEAD")
    ]
    # a missing attribute is the empty string
    assert names(rules, facts(BodyPartExamined=None, SliceThickness="1.5")) == []
    assert names([rule("r", {"tags": {"BodyPartExamined": "|ABDOMEN"}})], facts(BodyPartExamined=None)) == [
        "r"
    ]


def test_multi_valued_tag_joined_with_backslash() -> None:
    rules = [rule("r", {"tags": {"ImageType": r"ORIGINAL\\PRIMARY\\.*"}})]
    assert names(rules, facts(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])) == ["r"]
    assert names(rules, facts(ImageType=["DERIVED", "SECONDARY"])) == []


def test_case_sensitive_unless_pattern_says_so() -> None:
    assert names([rule("r", {"series_description": ".*phantom.*"})], facts()) == []
    assert names([rule("r", {"series_description": "(?i).*PHANTOM.*"})], facts()) == ["r"]
    assert names([rule("r", {"modality": "ct"})], facts()) == []


def test_full_match_not_search() -> None:
    assert names([rule("r", {"modality": "C"})], facts()) == []
    assert names([rule("r", {"series_description": "Phantom"})], facts()) == []
    assert names([rule("r", {"called_ae": "NNU"})], facts()) == []
    assert names([rule("r", {"modality": "CT|MR"})], facts()) == ["r"]  # alternation covers the whole value


def test_first_match_wins() -> None:
    rules = [rule("a", {"modality": "MR"}), rule("b", {"modality": "CT"}), rule("c")]
    decision = route(facts(), rules)
    assert decision.rule_names == ["b"]
    c = decision.explanations[2]
    assert not c.matched and c.conditions_met and c.shadowed_by == "b"
    assert "rule 'b' matched first" in c.describe()


def test_continue_tries_later_rules() -> None:
    rules = [
        rule("a", {"modality": "CT"}, **{"continue": True}),
        rule("b", {"modality": "MR"}),
        rule("c", {"called_ae": "NNUNET"}),
        rule("d"),
    ]
    decision = route(facts(), rules)
    assert decision.rule_names == ["a", "c"]
    assert decision.explanations[3].shadowed_by == "c"


def test_disabled_rules_are_skipped_and_explained() -> None:
    rules = [rule("off", enabled=False), rule("on")]
    decision = route(facts(), rules)
    assert decision.rule_names == ["on"]
    assert decision.explanations[0].describe() == "disabled"
    assert not decision.explanations[0].matched


def test_no_match_explains_every_failed_condition() -> None:
    rules = [rule("r", {"modality": "MR", "calling_ae": "ORTHANC", "called_ae": "NNUNET"})]
    decision = route(facts(), rules)
    assert decision.matched == []
    failures = {(f.field, f.pattern, f.actual) for f in decision.explanations[0].failures}
    assert failures == {("modality", "MR", "CT"), ("calling_ae", "ORTHANC", "STORESCU")}
    note = decision.note()
    assert note.startswith("no rule matches") and "'CT' does not fully match 'MR'" in note
    assert route(facts(), []).note() == "no rules configured"


def test_settings_and_jobs_from_several_rules() -> None:
    rules = [
        rule("a", series_quiet_seconds=5, **{"continue": True}, destinations=["pacs"], args={"tta": False}),
        rule("b", series_quiet_seconds=30, complete_on_release=True, use_expected_count=False, models="x"),
    ]
    decision = route(facts(), rules)
    settings = routing_settings(decision)
    assert settings.rules == ("a", "b")
    assert settings.quiet_seconds == 30
    assert settings.complete_on_release is True
    assert settings.use_expected_count is False
    assert job_specs(decision.matched) == [
        JobSpec(rule_name="a", models=["demo"], destinations=["pacs"], args={"tta": False}),
        JobSpec(rule_name="b", models=["x"], destinations=[], args={}),
    ]


def test_settings_when_nothing_matches() -> None:
    settings = routing_settings(route(facts(), [rule("r", {"modality": "MR"})]))
    assert settings.rules == ()
    assert settings.note.startswith("no rule matches")


class StubCatalog:
    def __init__(self, *known: str) -> None:
        self.known = set(known)

    def resolve(self, name: str) -> str:
        if name not in self.known:
            raise KeyError(f"unknown model {name}")
        return name


def test_ruleset_validates_models_and_destinations() -> None:
    rules = [rule("a", models=["demo", "liver"]), rule("b", destinations=["pacs", "lost"])]
    with pytest.raises(ConfigError) as info:
        RuleSet.build(rules, catalog=StubCatalog("demo"), destinations={"pacs": object()})
    lines = str(info.value).splitlines()
    assert any("rule 'a'" in ln and "model 'liver'" in ln for ln in lines)
    assert any("rule 'b'" in ln and "unknown destination 'lost'" in ln for ln in lines)
    ok = RuleSet.build(rules[:1], catalog=StubCatalog("demo", "liver"))
    assert ok.names == ["a"] and ok.model_names() == ["demo", "liver"]


def test_ruleset_is_immutable_and_routes() -> None:
    rules = RuleSet.build([rule("a", {"modality": "CT"})])
    with pytest.raises(AttributeError):
        rules.rules = ()  # type: ignore[misc]
    assert rules.route(facts()).rule_names == ["a"]
    assert len(rules) == 1
    with pytest.raises(ConfigError, match="duplicate rule name"):
        RuleSet.build([rule("a"), rule("a")])


def test_config_load_and_ruleset_refuse_the_same_rules_alike() -> None:
    """One rules check: what the configuration refuses at load, RuleSet.build refuses in the same words."""
    rules = [rule("a", destinations=["lost"]), rule("a"), rule("b")]
    with pytest.raises(ConfigError) as built:
        RuleSet.build(rules, destinations={"pacs": object()})
    data = {
        "model_spec": "spec.yaml",
        "destinations": {"pacs": {"ae_title": "PACS", "host": "h", "port": 104}},
        "rules": [r.model_dump(by_alias=True) for r in rules],
    }
    with pytest.raises(ConfigError) as loaded:
        config_from_mapping(data, base_dir=Path("."))
    problems = str(built.value).splitlines()
    assert len(problems) == 2
    assert all(p in str(loaded.value) for p in problems)
