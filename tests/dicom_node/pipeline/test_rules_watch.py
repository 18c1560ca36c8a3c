"""Hot reload of rules: real files, real watchdog observer, results polled with wait_for."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.config import load_config
from dicom_node.pipeline.routing import RuleSet
from dicom_node.pipeline.rules_watch import RulesWatcher, config_rules_loader, watch_config_rules
from tests.support.tools import wait_for

BASE = """\
node: {ae_title: NNUNET}
model_spec: spec.yaml
destinations:
  pacs: {ae_title: PACS, host: 127.0.0.1, port: 104}
"""


def inline(*rule_names: str, port: int = 104) -> str:
    rules = "".join(f"  - {{name: {n}, models: demo, destinations: [pacs]}}\n" for n in rule_names)
    return BASE.replace("port: 104", f"port: {port}") + ("rules:\n" + rules if rules else "rules: []\n")


def rules_only(*rule_names: str, destination: str = "pacs") -> str:
    return (
        "".join(f"- {{name: {n}, models: demo, destinations: [{destination}]}}\n" for n in rule_names)
        or "[]\n"
    )


class StubCatalog:
    def resolve(self, name: str) -> str:
        if name != "demo":
            raise KeyError(f"no model {name!r}")
        return name


class Applied:
    """Collects the rule sets a watcher hands over."""

    def __init__(self) -> None:
        self.sets: list[RuleSet] = []
        self.lock = threading.Lock()

    def __call__(self, rules: RuleSet) -> None:
        with self.lock:
            self.sets.append(rules)

    def names(self) -> list[list[str]]:
        with self.lock:
            return [s.names for s in self.sets]


def replace_by_rename(path: Path, text: str) -> None:
    """What editors and config managers do: write a temp file, rename it over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@pytest.fixture
def applied() -> Applied:
    return Applied()


@pytest.fixture
def inline_watch(tmp_path: Path, applied: Applied) -> Iterator[tuple[Path, RulesWatcher]]:
    path = tmp_path / "node.yaml"
    path.write_text(inline("a"), encoding="utf-8")
    watcher = watch_config_rules(load_config(path), applied, StubCatalog(), debounce_seconds=0.05)
    watcher.start()
    try:
        yield path, watcher
    finally:
        watcher.stop()


def test_edit_in_place_applies_new_rules(inline_watch: tuple[Path, RulesWatcher], applied: Applied) -> None:
    path, _ = inline_watch
    path.write_text(inline("a", "b"), encoding="utf-8")
    wait_for(lambda: ["a", "b"] in applied.names(), timeout=10, what="rules a, b applied")


def test_replace_by_rename_applies_new_rules(
    inline_watch: tuple[Path, RulesWatcher], applied: Applied
) -> None:
    path, _ = inline_watch
    replace_by_rename(path, inline("c"))
    wait_for(lambda: ["c"] in applied.names(), timeout=10, what="rule c applied after rename")
    replace_by_rename(path, inline("c", "d"))
    wait_for(lambda: ["c", "d"] in applied.names(), timeout=10, what="second rename applied")


def test_broken_file_is_refused_and_old_rules_stay(
    inline_watch: tuple[Path, RulesWatcher], applied: Applied, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = inline_watch
    caplog.set_level(logging.INFO, logger="dicom_node.pipeline.rules_watch")
    broken = [
        ("rules: [name: x\n", "not valid YAML"),
        (inline("a").replace("models: demo", "models: demo, colour: red"), "colour: unknown key"),
        (inline("a").replace("[pacs]", "[archive]"), "unknown destination"),
        (inline("a").replace("models: demo", "models: liver"), "model 'liver'"),
    ]
    for text, problem in broken:
        replace_by_rename(path, text)
        wait_for(
            lambda problem=problem: any(
                "refused new rules" in r.getMessage() and problem in r.getMessage() for r in caplog.records
            ),
            timeout=10,
            what=f"refusal naming {problem!r}",
        )
    assert applied.names() == []  # nothing replaced the rules in effect
    # a good version after the broken ones is applied
    path.write_text(inline("a", "fixed"), encoding="utf-8")
    wait_for(lambda: applied.names() == [["a", "fixed"]], timeout=10, what="fixed rules applied")


def test_change_outside_rules_logs_restart_needed(
    inline_watch: tuple[Path, RulesWatcher], applied: Applied, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = inline_watch
    caplog.set_level(logging.WARNING, logger="dicom_node.pipeline.rules_watch")
    path.write_text(
        inline("a", "b", port=105).replace("ae_title: NNUNET", "ae_title: OTHER"), encoding="utf-8"
    )
    wait_for(lambda: ["a", "b"] in applied.names(), timeout=10, what="rules applied")
    messages = [r.getMessage() for r in caplog.records]
    assert any("restart needed for: node, destinations" in m for m in messages), messages


def test_rules_file_is_watched(tmp_path: Path, applied: Applied, caplog: pytest.LogCaptureFixture) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_only("a"), encoding="utf-8")
    config = tmp_path / "node.yaml"
    config.write_text(BASE + "rules_file: rules.yaml\n", encoding="utf-8")
    cfg = load_config(config)
    caplog.set_level(logging.INFO, logger="dicom_node.pipeline.rules_watch")
    with watch_config_rules(cfg, applied, StubCatalog(), debounce_seconds=0.05) as watcher:
        assert watcher.path == rules.resolve()
        replace_by_rename(rules, rules_only("a", "b"))
        wait_for(lambda: ["a", "b"] in applied.names(), timeout=10, what="rules file reload")
        rules.write_text(rules_only("c", destination="nowhere"), encoding="utf-8")
        wait_for(
            lambda: any("unknown destination" in r.getMessage() for r in caplog.records),
            timeout=10,
            what="refusal of an unknown destination",
        )
    assert applied.names() == [["a", "b"]]


def test_check_now_reloads_only_changed_content(tmp_path: Path, applied: Applied) -> None:
    # not started: no observer thread races with the explicit checks
    path = tmp_path / "node.yaml"
    path.write_text(inline("a"), encoding="utf-8")
    cfg = load_config(path)
    loads: list[int] = []

    def load() -> RuleSet:
        loads.append(1)
        return config_rules_loader(cfg)()

    watcher = RulesWatcher(path, load, applied)
    assert watcher.check_now() is False  # same content as when the rules were loaded
    path.write_text(inline("a", "b"), encoding="utf-8")
    assert watcher.check_now() is True
    assert watcher.check_now() is False  # already applied
    path.write_text("  \n", encoding="utf-8")
    assert watcher.check_now() is False  # empty file (an editor mid-write): refused
    path.unlink()
    assert watcher.check_now() is False  # missing file: rules kept
    path.write_text(inline("a"), encoding="utf-8")
    assert watcher.check_now() is True  # back to the first version: a change from a, b
    assert applied.names() == [["a", "b"], ["a"]]
    assert len(loads) == 2
