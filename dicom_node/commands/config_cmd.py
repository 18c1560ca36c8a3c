"""``dicom-node config validate PATH``: load a node configuration the way ``serve`` does and report.

Checks: the YAML and every key (unknown keys, types, regexes, AE titles), the rules file when one is
named, the model spec (loaded with ``inference.spec.load_model_spec``), that every rule's models resolve
in it and its destinations are configured. Prints ``OK: N rules, M destinations, K models`` (exit 0) or
the problems, one per line (exit 1). Warnings (e.g. a rule that can never match) do not fail.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dicom_node.config import NodeConfig, load_config
from dicom_node.errors import ConfigError
from dicom_node.pipeline.routing import ModelResolver, RuleSet

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="check a node configuration")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    validate = actions.add_parser(
        "validate",
        help="load a configuration, its rules and model spec; print OK or the problems",
        description="Validate a node configuration like 'serve' does at start-up, without starting anything.",
    )
    validate.add_argument("path", type=Path, metavar="PATH", help="the node configuration (YAML)")
    validate.set_defaults(func=run_validate)


def _spec_loader() -> Callable[[Path], ModelResolver]:
    from inference.spec import load_model_spec  # imported late: the rest of the CLI stays light

    return load_model_spec


def never_matching_rules(config: NodeConfig) -> list[str]:
    """Warnings for enabled rules whose called_ae pattern matches none of the node's AE titles."""
    warnings = []
    for rule in config.rules:
        pattern = rule.match.patterns().get("called_ae")
        if (
            rule.enabled
            and pattern is not None
            and not any(pattern.fullmatch(t) for t in config.node.ae_title)
        ):
            warnings.append(
                f"rule {rule.name!r} can never match: called_ae {pattern.pattern!r} matches none of "
                f"the node's AE titles ({', '.join(config.node.ae_title)})"
            )
    return warnings


def validate(path: Path, spec_loader: Callable[[Path], ModelResolver]) -> tuple[list[str], list[str], str]:
    """(errors, notes, summary line) for the configuration at ``path``."""
    notes: list[str] = []
    try:
        config = load_config(path)
    except ConfigError as exc:
        return _lines(exc), notes, ""
    catalog: ModelResolver | None = None
    if config.model_spec is None:
        notes.append("note: no model_spec configured (fine while there are no rules)")
    else:
        try:
            catalog = spec_loader(config.model_spec)
        except Exception as exc:  # the spec loader's own error type; reported as a validation error
            return [f"model spec {config.model_spec}: {exc}"], notes, ""
    try:
        rules = RuleSet.from_config(config, catalog)
    except ConfigError as exc:
        return _lines(exc), notes, ""
    notes.extend(f"warning: {w}" for w in never_matching_rules(config))
    models = rules.model_names()
    if catalog is not None:
        models = list(dict.fromkeys(str(getattr(catalog.resolve(m), "id", m)) for m in models))
    summary = f"OK: {len(rules)} rules, {len(config.destinations)} destinations, {len(models)} models"
    return [], notes, summary


def _lines(exc: ConfigError) -> list[str]:
    return [line.strip() for line in str(exc).splitlines() if line.strip()]


def run_validate(args: argparse.Namespace) -> int:
    errors, notes, summary = validate(args.path, _spec_loader())
    for note in notes:
        print(note)
    if errors:
        for line in errors:
            print(line)
        return 1
    print(summary)
    return 0
