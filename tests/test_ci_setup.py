"""The set-up contract: the README opens with the demo and test commands, .ci/run runs exactly the
README's test command after failing lint/type checks, and the scripts are executable bash."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md must open with a bash code block"
    assert text.index(block.group(0)) < text.index("\n## "), "the commands come before any section"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = _readme_commands()[:2]
    assert demo.startswith("./scripts/bootstrap.sh && ") and demo.endswith(".venv/bin/dicom-node demo")
    assert tests.startswith("./scripts/bootstrap.sh && ") and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command_after_lint() -> None:
    tests = _readme_commands()[1]
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert lines.count(tests) == 1
    position = lines.index(tests)
    for check in (".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/mypy"):
        assert check in lines[:position], check
    assert "set -euo pipefail" in lines


def test_scripts_are_executable_and_parse() -> None:
    for script in (ROOT / "scripts" / "bootstrap.sh", ROOT / ".ci" / "run"):
        assert os.access(script, os.X_OK), script
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_bootstrap_installs_the_constrained_torch_before_the_project() -> None:
    """The CPU torch wheels are installed first, with the same pins constraints.txt holds (a pin bumped
    in one place only would let pip replace torch with a CUDA build, or fail)."""
    text = (ROOT / "scripts" / "bootstrap.sh").read_text()
    pins = re.search(r"^TORCH_PINS=\((.*)\)$", text, re.M)
    assert pins is not None, "bootstrap.sh names its torch pins in TORCH_PINS=(...)"
    constraints = set((ROOT / "constraints.txt").read_text().splitlines())
    assert pins[1].split() and set(pins[1].split()) <= constraints
    assert text.index('install -q "${TORCH_PINS[@]}"') < text.index('-c constraints.txt -e ".[dev,ray]"')
