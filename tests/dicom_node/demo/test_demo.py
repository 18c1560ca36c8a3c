"""``dicom-node demo``: the whole path runs and exits 0, writes a valid PNG overlay, and the printed Dice
values of the demo model against the phantom's ground truth are above a threshold. Plus the work
folder rules (never wipes a folder it did not make) and ``--keep`` (same SEG UIDs again)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dicom_node.demo.demo import DemoOptions, demo_uids, node_config, prepare_workdir
from dicom_node.errors import DemoError
from tests.support.node_process import REPO_ROOT
from tests.support.tools import peer_env

DICE_THRESHOLD = 0.7
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _demo(workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dicom_node.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--device",
            "cpu",
            *extra,
        ],
        cwd=REPO_ROOT,
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _printed_dice(stdout: str) -> dict[str, float]:
    section = stdout.split("Dice vs the phantom's ground truth:", 1)[1].split("\n\n", 1)[0]
    return {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\S+)\s+([01]\.\d+)$", section, re.M)}


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = _demo(workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dicom-node demo: OK" in proc.stdout

    overlay = workdir / "overlay.png"
    assert overlay.read_bytes()[:8] == PNG_MAGIC
    with Image.open(overlay) as png:
        png.verify()
    with Image.open(overlay) as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 300

    dice = _printed_dice(proc.stdout)
    assert set(dice) == {"Body", "Liver", "Kidney"}, proc.stdout
    assert all(value > DICE_THRESHOLD for value in dice.values()), dice

    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["instances_sent"] == 32
    assert summary["dciodvfy_errors"] in (0, None)
    stages = [t["stage"] for t in summary["timings"]]
    for stage in ("load", "inference", "seg_write", "sending"):
        assert stage in stages
    assert Path(summary["seg_path"]).is_file()

    # --keep: the node keeps its journal, gets the same series again and re-delivers the same SEG
    again = _demo(workdir, "--keep")
    assert again.returncode == 0, again.stdout + again.stderr
    summary2 = json.loads((workdir / "summary.json").read_text())
    assert summary2["seg_sop_instance_uid"] == summary["seg_sop_instance_uid"]
    assert len(list((workdir / "received").glob("*.dcm"))) == 1


def test_demo_fails_with_one_line_when_the_model_spec_is_missing(tmp_path: Path) -> None:
    proc = _demo(tmp_path / "demo", "--model-spec", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("dicom-node demo failed: model spec")
    assert "nope.yaml" in lines[-1]


def test_workdir_is_only_cleared_when_the_demo_made_it(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(DemoError, match="not made by the demo"):
        prepare_workdir(foreign, keep=False)
    assert (foreign / "thesis.txt").read_text() == "precious"

    ours = prepare_workdir(tmp_path / "demo", keep=False)
    (ours / "ct").mkdir()
    (ours / "overlay.png").write_bytes(b"old")
    (ours / "notes.txt").write_text("user file")
    prepare_workdir(ours, keep=True)
    assert (ours / "ct").is_dir() and (ours / "overlay.png").exists()
    prepare_workdir(ours, keep=False)
    assert not (ours / "ct").exists() and not (ours / "overlay.png").exists()
    assert (ours / "notes.txt").read_text() == "user file"


def test_demo_config_is_a_valid_node_config(tmp_path: Path) -> None:
    from dicom_node.config import config_from_mapping

    options = DemoOptions(workdir=tmp_path, quiet_seconds=1.5)
    cfg = config_from_mapping(node_config(options, receiver_port=4321), base_dir=tmp_path)
    assert cfg.node.port == 0 and cfg.node.storage_dir == (tmp_path / "storage").resolve()
    (rule,) = cfg.rules
    assert rule.series_quiet_seconds == 1.5 and rule.use_expected_count
    assert cfg.destinations[rule.destinations[0]].port == 4321
    assert demo_uids(1) == demo_uids(1) and demo_uids(1) != demo_uids(2)
