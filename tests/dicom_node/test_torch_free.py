"""The node's own modules load no torch (nor nnU-Net): the CLI starts fast, and a node whose
executor runs elsewhere (a cluster) never pays for them. Only building the in-process executor does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.random_model import write_random_spec

ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("torch", "nnunetv2")


def loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (this checkout first on the path); the heavy modules it
    left loaded."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_importing_the_node_workers_and_cli_loads_no_torch() -> None:
    code = (
        "import dicom_node.pipeline.worker, dicom_node.pipeline.executors, dicom_node.node, dicom_node.cli\n"
        "import inference.api\n"
        "dicom_node.cli.build_parser()  # imports every command module"
    )
    assert loaded_after(code) == []


def test_building_the_in_process_executor_is_what_loads_torch(tmp_path: Path) -> None:
    """The probe can see torch: the executor factory loads it, when it is called."""
    spec = write_random_spec(tmp_path, {"m": {}})
    setup = (
        "from dicom_node.config import InferenceSection\n"
        "from dicom_node.pipeline.executors import build_executor\n"
        "from inference.spec import load_model_spec\n"
        f"catalog = load_model_spec({str(spec)!r})\n"
    )
    assert loaded_after(setup) == []
    assert "torch" in loaded_after(setup + "build_executor(InferenceSection(device='cpu'), catalog).close()")
