"""A cascade set from a rule: storescu -> node -> dcmtk storescp. The rule feeds stage 2 the CT and
stage 1's label 2 (``from:organ=2``) and asks for a SEG per stage; each delivered SEG is compared
with the predictor run directly, stage by stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from dicom_node.config import config_from_mapping
from dicom_node.node import Node
from inference.executor import InProcessExecutor
from inference.postprocess import intersect_components
from inference.series import load_series
from tests.support.node_setup import node_config, phantom_series, received_segs, storescu
from tests.support.random_model import write_random_spec
from tests.support.seg_read import seg_labels_on_grid
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import dciodvfy, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

QUICK = {"tile_step_size": 1.0}


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "pacs"
    with dcmtk_storescp(port, out):
        yield port, out


def test_rule_cascade_with_a_label_mask_input_delivers_a_seg_per_stage(
    tmp_path: Path, destination: tuple[int, Path]
) -> None:
    port, out = destination
    spec = write_random_spec(
        tmp_path / "spec",
        {
            "organ": {"seed": 1, "default_args": QUICK},
            "lesion": {"seed": 5, "channels": ("CT", "liver mask"), "default_args": QUICK},
        },
    )
    rule = {
        "models": ["organ", "lesion"],
        "args": {
            "series_folders": [[0], [0, "from:organ=2"]],
            "seg_each_stage": True,
            "min_intersection": 0.1,
        },
    }
    config = config_from_mapping(node_config(tmp_path / "var", spec, port, rule=rule), base_dir=tmp_path)
    files = phantom_series(tmp_path / "ct", slices=12)
    with Node(config) as node:
        run = storescu(node.port, files)
        assert run.returncode == 0, run.output
        wait_for(lambda: len(received_segs(out)) == 2, timeout=180, what="two SEGs at storescp")
    by_description = {
        str(dcmread(paths[0], stop_before_pixels=True).SeriesDescription): paths[0]
        for paths in received_segs(out).values()
    }
    assert set(by_description) == {"organ segmentation", "lesion segmentation"}

    source = load_series(files)
    image = source.volume.array.astype(np.float32)
    spacing = source.volume.geometry.spacing
    executor = InProcessExecutor(spec, device="cpu", num_threads=2)

    def predict(model: str, *images: np.ndarray) -> np.ndarray:
        resolved = executor.catalog.resolve(model)
        return executor.cache.predict(
            resolved.model_dir, list(images), spacing, folds=(0,), tile_step_size=1.0
        ).labels

    organ = predict("organ", image)
    assert (organ == 2).any(), "the random organ model must find label 2 for this test to mean anything"
    lesion = intersect_components(predict("lesion", image, (organ == 2).astype(np.float32)), organ > 0, 0.1)
    geometry = source.volume.geometry
    np.testing.assert_array_equal(seg_labels_on_grid(by_description["organ segmentation"], geometry), organ)
    np.testing.assert_array_equal(seg_labels_on_grid(by_description["lesion segmentation"], geometry), lesion)
    for path in by_description.values():
        assert dciodvfy(path).errors == []
