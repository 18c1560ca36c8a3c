"""Parity with TotalSegmentator itself: the same CT segmented by the node (in memory, warm predictors) and by
the installed package's own Python API (``totalsegmentator(...)``, in a process of its own, on a NIfTI copy
of the series) gives the same label map voxel for voxel in the source geometry.

Stand-in weights (random nnU-Net models in the package's folder layout, tests/support/totalseg_weights.py)
for a single-part task in its ``fast`` mode, a multi-part task (``total_mr``: two datasets merged with the
package's class maps) and a task that crops to an organ found by a rough model first (``liver_segments``
after dataset 298). The series are anisotropic and stored with axes TotalSegmentator must reorient:
coronal slices, an oblique plane, a mirrored row direction.
"""

from __future__ import annotations

import csv
import importlib.resources
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from pydicom import dcmread

from dicom_node.demo.phantom import make_phantom, write_ct_series
from inference.codes import CodeBook
from inference.executor import InferenceRequest, InProcessExecutor
from inference.series import load_series
from inference.spec import load_model_spec
from tests.support.dicom_series import oblique_orientation
from tests.support.seg_read import seg_labels_on_grid
from tests.support.totalseg_weights import offline_home, write_task

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    spec: dict[str, Any]
    task: str
    options: dict[str, Any]
    orientation: Sequence[float]


CASES = {
    "fast": Case(
        {"totalseg_task": "total", "totalseg_options": {"fast": True}},
        "total",
        {"fast": True},
        (1, 0, 0, 0, 0, -1),
    ),
    "multi_part": Case({"totalseg_task": "total_mr"}, "total_mr", {}, oblique_orientation(15.0, -10.0)),
    "crop": Case({"totalseg_task": "liver_segments"}, "liver_segments", {}, (-1, 0, 0, 0, 1, 0)),
}


@dataclass
class World:
    executor: InProcessExecutor
    series: dict[str, list[Path]] = field(default_factory=dict)
    reference: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("totalseg")
    weights = root / "weights"
    write_task(weights, "total", mode="fast", seed=50)
    write_task(weights, "total_mr", seed=90)
    write_task(weights, "liver_segments", crop_datasets=(298,), seed=0)  # 298 then finds a liver
    spec = root / "spec.yaml"
    models = [{"id": name, "min_mem": 0, **case.spec} for name, case in CASES.items()]
    spec.write_text(yaml.safe_dump({"model_folder": "models", "models": models}))
    catalog = load_model_spec(spec, environ={"TOTALSEG_WEIGHTS_PATH": str(weights)})
    world = World(InProcessExecutor(catalog, device="cpu", num_threads=2, max_models=8))

    phantom = make_phantom(shape=(24, 48, 40), spacing=(0.9, 0.8, 2.5), seed=3)
    jobs = []
    for name, case in CASES.items():
        files = write_ct_series(phantom, root / f"ct-{name}", orientation=case.orientation)
        world.series[name] = files
        nifti = root / f"ct-{name}.nii.gz"
        sitk.WriteImage(load_series(files).volume.to_sitk(), str(nifti))
        world.reference[name] = root / f"ts-{name}.nii.gz"
        jobs.append(
            {
                "input": str(nifti),
                "output": str(world.reference[name]),
                "task": case.task,
                "options": case.options,
            }
        )
    report = root / "report.json"
    (root / "jobs.json").write_text(json.dumps({"jobs": jobs, "report": str(report)}))
    env = {
        **os.environ,
        "TOTALSEG_WEIGHTS_PATH": str(weights),
        "TOTALSEG_HOME_DIR": str(offline_home(root / "home")),
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.totalseg_reference", str(root / "jobs.json")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    world.report = json.loads(report.read_text())
    yield world


def reference_labels(world: World, name: str) -> np.ndarray:
    import nibabel as nib

    data = np.asarray(nib.load(world.reference[name]).dataobj).astype(np.uint8)
    return data.transpose(2, 1, 0)  # the NIfTI copy stores (x, y, z) of the series' (z, y, x)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_label_map_matches_totalsegmentators_own_api(
    world: World, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    calls: list[object] = []
    monkeypatch.setattr(requests.Session, "request", lambda *a, **k: calls.append(a))
    request = InferenceRequest(inputs=[world.series[name]], models=[name], output_dir=tmp_path)
    ours = world.executor._pipeline.segment(request).labels
    reference = reference_labels(world, name)
    assert len(np.unique(reference)) > 2, "TotalSegmentator found fewer than two classes: a weak test"
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(ours, reference)
    assert calls == []


@pytest.mark.slow
def test_totalsegmentator_made_no_network_request(world: World) -> None:
    assert world.report["requests"] == []


def _package_codes() -> dict[str, dict[str, str]]:
    path = importlib.resources.files("totalsegmentator") / "resources" / "totalsegmentator_snomed_mapping.csv"
    with path.open(encoding="utf-8") as handle:
        return {row["Structure"]: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_seg_holds_every_class_found_with_the_package_labels_and_codes(world: World, tmp_path: Path) -> None:
    from totalsegmentator.map_to_binary import class_map

    request = InferenceRequest(
        inputs=[world.series["multi_part"]], models=["multi_part"], output_dir=tmp_path
    )
    result = world.executor.run(request)
    seg_path = result.outputs[0].path
    reference = reference_labels(world, "multi_part")
    geometry = load_series(world.series["multi_part"]).volume.geometry
    np.testing.assert_array_equal(seg_labels_on_grid(seg_path, geometry), reference)

    package = _package_codes()
    seg = dcmread(seg_path)
    found = {int(v) for v in np.unique(reference)} - {0}
    numbers = {int(s.SegmentNumber) for s in seg.SegmentSequence}
    assert found <= numbers
    for segment in seg.SegmentSequence:
        name = class_map["total_mr"][int(segment.SegmentNumber)]
        assert segment.SegmentLabel == name
        code = segment.SegmentedPropertyTypeCodeSequence[0]
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        row = package.get(name)
        if row is None:
            # Not in the package's mapping: our code book's code, else Tissue as the package's SEG writer.
            known = CodeBook.default().lookup(name)
            expected_type = "85756007" if known is None else known.property_type.value
            assert code.CodeValue == expected_type
            continue
        assert code.CodeValue == row["SegmentedPropertyTypeCodeSequence.CodeValue"]
        # The package's 123037004 ("Body structure") is written as CID 7150's Anatomical Structure.
        expected = row["SegmentedPropertyCategoryCodeSequence.CodeValue"].replace("123037004", "91723000")
        assert category.CodeValue == expected
        modifier = row["SegmentedPropertyTypeModifierCodeSequence.CodeValue"]
        if modifier:
            assert code.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == modifier


@pytest.mark.slow
def test_every_part_stays_warm_even_with_a_small_cache(world: World, tmp_path: Path) -> None:
    executor = InProcessExecutor(world.executor.catalog, device="cpu", num_threads=2, max_models=1)
    executor.warm_up("multi_part")
    assert executor.cache.loads == 2  # total_mr's two datasets, both kept
    request = InferenceRequest(
        inputs=[world.series["multi_part"]], models=["multi_part"], output_dir=tmp_path
    )
    labels = executor._pipeline.segment(request).labels
    executor._pipeline.segment(request)
    assert executor.cache.loads == 2
    np.testing.assert_array_equal(labels, reference_labels(world, "multi_part"))
