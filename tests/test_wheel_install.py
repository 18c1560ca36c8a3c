"""The node works installed from its wheel, not only from the checkout: the wheel carries the demo
model and its spec (package data), and ``dicom-node demo`` run from a fresh environment, outside the
repository and with no PYTHONPATH, imports the installed package and gets a valid SEG back.

The fresh venv reuses this environment's third-party packages through a plain path line in a
``.pth`` file (a path line adds the folder to sys.path without running the ``.pth`` files there, so
the checkout's editable install stays invisible); the wheel is installed before that line exists,
so pip sees nothing to replace. No network: the wheel is built without build isolation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = "dicom_node/demo/data/models/Dataset801_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres"


def run(cmd: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the checkout gets no build/ or egg-info."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("dicom_node", "inference"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src],
        cwd=tmp_path,
    )
    [wheel] = dist.glob("*.whl")
    return wheel


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_outside_the_checkout(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for part in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth"):
        assert f"{MODEL}/{part}" in names
    assert "dicom_node/demo/data/model-serve-spec.yaml" in names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        cwd=tmp_path,
    )
    site = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).strip()
    )
    (site / "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TCP_NODELAY"] = "1"
    where = tmp_path / "elsewhere"
    where.mkdir()
    found = run(
        [python, "-c", "import dicom_node, inference; print(dicom_node.__file__, inference.__file__)"],
        cwd=where,
        env=env,
    )
    assert all(Path(f).is_relative_to(site) for f in found.split())

    out = run(
        [venv / "bin" / "dicom-node", "demo", "--workdir", "demo", "--device", "cpu"], cwd=where, env=env
    )
    assert "dicom-node demo: OK" in out
    summary = json.loads((where / "demo" / "summary.json").read_text())
    assert summary["ok"] and summary["problems"] == []
    assert summary["dciodvfy_errors"] == 0
    assert min(summary["dice"].values()) > 0.7
    node_yaml = yaml.safe_load((where / "demo" / "node.yaml").read_text())
    assert Path(node_yaml["model_spec"]).is_relative_to(site)  # the shipped spec, not the checkout's
