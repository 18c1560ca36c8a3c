"""``dicom-node rules explain DIR``: which rule each series in a folder matches, and why the others do not.

The headers (no pixel data) of the DICOM files under DIR are read, grouped by SeriesInstanceUID, and each
series is routed exactly as the node would route it (first instance's header, the given AEs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pydicom.dataset import Dataset

from dicom_node.config import NodeConfig, load_config, load_rules_file
from dicom_node.errors import ConfigError, UnreadableDatasetError
from dicom_node.pipeline.routing import RuleSet, SeriesFacts, dicom_text
from dicom_node.storage.header import read_routing_header

logger = logging.getLogger(__name__)

CONFIG_ENV = "DICOM_NODE_CONFIG"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("rules", help="inspect routing rules")
    actions = parser.add_subparsers(dest="rules_action", metavar="ACTION", required=True)
    explain = actions.add_parser(
        "explain",
        help="show which rule matches each series in a folder, and why the others do not",
        description="Route the series found under DIR (DICOM headers only) with the node's rules and "
        "explain every decision. Nothing is sent or stored.",
    )
    explain.add_argument(
        "dir", type=Path, metavar="DIR", help="folder with DICOM files (searched recursively)"
    )
    explain.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"node configuration (default: ${CONFIG_ENV})",
    )
    explain.add_argument(
        "--rules",
        type=Path,
        default=None,
        help="a rules-only file to try instead of the configuration's rules",
    )
    explain.add_argument("--called-ae", default=None, help="called AE title (default: the node's first)")
    explain.add_argument("--calling-ae", default=None, help='calling AE title (default: "")')
    explain.set_defaults(func=run_explain)


@dataclass
class _Series:
    uid: str
    header: Dataset
    instances: int = 1


def scan_headers(folder: Path) -> tuple[list[_Series], list[Path]]:
    """Series under ``folder`` in order of first appearance (paths sorted), and the files that were
    not DICOM instances."""
    series: dict[str, _Series] = {}
    skipped: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                ds = read_routing_header(path)  # as completion reads it
            except (OSError, UnreadableDatasetError) as exc:  # reported as skipped, the reason logged
                logger.debug("skipping %s: %s", path, exc)
                skipped.append(path)
                continue
            uid = dicom_text(ds.get("SeriesInstanceUID"))
            if not uid:
                skipped.append(path)
                continue
            if uid in series:
                series[uid].instances += 1
            else:
                series[uid] = _Series(uid, ds)
    return list(series.values()), skipped


def _load(args: argparse.Namespace) -> tuple[NodeConfig, RuleSet, str]:
    config_path = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if config_path is None and args.rules is None:
        raise ConfigError(f"give --config PATH (or set ${CONFIG_ENV}), or --rules PATH")
    config = load_config(config_path) if config_path is not None else NodeConfig()
    source = str(config_path) if config_path is not None else "(no config: node defaults)"
    if args.rules is not None:
        rules = load_rules_file(args.rules)
        source = str(args.rules)
        if config_path is not None:
            return config, RuleSet.from_config(config.with_rules(rules)), source
        return config, RuleSet.build(rules), source
    return config, RuleSet.from_config(config), source


def explain(
    folder: Path, rules: RuleSet, *, called_ae: str, calling_ae: str, out: TextIO
) -> list[tuple[str, list[str]]]:
    """Write the explanation for every series under ``folder`` to ``out``; returns (series UID,
    matched rule names) per series."""
    found, skipped = scan_headers(folder)
    results: list[tuple[str, list[str]]] = []
    by_name = {r.name: r for r in rules}
    for item in found:
        facts = SeriesFacts.from_dataset(item.header, called_ae=called_ae, calling_ae=calling_ae)
        decision = rules.route(facts)
        out.write(f"\nSeries {item.uid}\n")
        out.write(
            f"  modality {facts.modality or '-'}, description {facts.series_description!r}, "
            f"{item.instances} instance(s)\n"
        )
        if not decision.matched:
            out.write("  no rule matches\n")
        for expl in decision.explanations:
            rule = by_name[expl.rule]
            if expl.matched:
                dests = ", ".join(rule.destinations) or "none (results stay on the node)"
                more = " (continue: later rules tried too)" if rule.continue_ else ""
                out.write(
                    f"  MATCH {rule.name}: models {', '.join(rule.models)}; destinations {dests}{more}\n"
                )
            else:
                out.write(f"  rule {expl.rule}: {expl.describe()}\n")
        results.append((item.uid, decision.rule_names))
    if not found:
        out.write(f"\nno DICOM series found under {folder}\n")
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        out.write(f"\nskipped {len(skipped)} file(s) that are not DICOM instances: {shown}\n")
    return results


def run_explain(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    try:
        config, rules, source = _load(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    called_ae = args.called_ae if args.called_ae is not None else config.node.ae_title[0]
    calling_ae = args.calling_ae if args.calling_ae is not None else ""
    out = sys.stdout
    out.write(f"Rules from {source}: {len(rules)}" + (f" ({', '.join(rules.names)})" if len(rules) else ""))
    out.write(f"\nCalled AE {called_ae!r}, calling AE {calling_ae!r}")
    if args.calling_ae is None:
        out.write(
            " (not given: calling_ae conditions fail unless they match an empty value; use --calling-ae)"
        )
    out.write("\n")
    explain(folder, rules, called_ae=called_ae, calling_ae=calling_ae, out=out)
    return 0
