"""docs/architecture.md's module map names every module of the two packages, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dicom_node", "inference")


def _modules() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                continue  # a package is named by its modules (and its docstring says what it holds)
            found.add(".".join(parts))
    return found


def _module_map() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("\n## Module map")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _named(section: str) -> set[str]:
    names = set(re.findall(r"`((?:dicom_node|inference)(?:\.[a-z_]+)+)`", section))
    # "`dicom_node.commands.*` (`serve`, `demo`, ...)": the listed command modules
    for prefix, listed in re.findall(r"`((?:dicom_node|inference)(?:\.[a-z_]+)*)\.\*` \(([^)]*)\)", section):
        names.update(f"{prefix}.{name}" for name in re.findall(r"`([a-z_]+)`", listed))
    return names


def test_the_module_map_names_every_module() -> None:
    missing = sorted(_modules() - _named(_module_map()))
    assert not missing, f"modules missing from docs/architecture.md's module map: {missing}"


def test_the_module_map_names_no_module_that_does_not_exist() -> None:
    modules = _modules()
    packages = {m.rsplit(".", 1)[0] for m in modules} | {m.split(".")[0] for m in modules}
    stale = sorted(n for n in _named(_module_map()) if n not in modules and n not in packages)
    assert not stale, f"docs/architecture.md's module map names modules that do not exist: {stale}"
