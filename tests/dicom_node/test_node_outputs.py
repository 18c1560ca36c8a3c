"""Every DICOM output of a job reaches the rule's destination: storescu -> node (rule asking for an
RTSTRUCT and a probability SEG besides the SEG) -> dcmtk storescp; each object valid under dciodvfy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.config import config_from_mapping
from dicom_node.node import Node
from tests.support.node_setup import FAST_ARGS, model_spec, node_config, phantom_series, storescu
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import dciodvfy, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "pacs"
    with dcmtk_storescp(port, out):
        yield port, out


def received(folder: Path) -> dict[str, Path]:
    """Received objects by (Modality, SegmentationType) description."""
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # storescp still writing it: looked at again on the next poll
            continue
        found[f"{ds.Modality}:{ds.get('SegmentationType', '')}"] = path
    return found


def test_seg_rtstruct_and_probability_seg_are_all_delivered(
    tmp_path: Path, destination: tuple[int, Path]
) -> None:
    port, out = destination
    spec = model_spec(tmp_path / "spec")
    args = {**FAST_ARGS, "save_rt_struct_output": True, "save_proba_map": True}
    config = config_from_mapping(
        node_config(tmp_path / "var", spec, port, rule={"args": args}), base_dir=tmp_path
    )
    files = phantom_series(tmp_path / "ct", slices=12)
    with Node(config) as node:
        run = storescu(node.port, files)
        assert run.returncode == 0, run.output
        wait_for(lambda: len(received(out)) == 3, timeout=180, what="3 objects at storescp")
    objects = received(out)
    assert set(objects) == {"SEG:BINARY", "SEG:FRACTIONAL", "RTSTRUCT:"}
    source = dcmread(files[0], stop_before_pixels=True)
    for path in objects.values():
        report = dciodvfy(path)
        assert report.errors == [], report.output
        assert dcmread(path, stop_before_pixels=True).StudyInstanceUID == source.StudyInstanceUID
