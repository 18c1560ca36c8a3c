"""Validation errors worded for people: one line per problem, rules named, not only numbered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """``rules.0.match`` -> ``rules[0] (ct-demo).match``: name the rule, not only its index."""
    parts = [str(p) for p in loc]
    rules: Any = None
    start = 0
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") if isinstance(data, dict) else None
        start = 1
    elif loc and isinstance(loc[0], int) and isinstance(data, list):
        rules, parts = data, ["rules", *parts]
    if rules is None or not isinstance(rules, list):
        return ".".join(parts) or "(top level)"
    index = int(loc[start])
    item = rules[index] if 0 <= index < len(rules) else None
    name = item.get("name") if isinstance(item, dict) else None
    head = f"rules[{index}]" + (f" ({name})" if isinstance(name, str) else "")
    rest = parts[2:]
    return head + ("." + ".".join(rest) if rest else "")


def format_validation_error(source: Path | str, exc: ValidationError, data: Any = None) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        where = _where(tuple(err["loc"]), data)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)
