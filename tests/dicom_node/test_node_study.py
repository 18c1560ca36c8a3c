"""Multi-series inputs: a rule maps a 3-channel model's inputs to three series of one study by
SeriesDescription; the series are sent over DICOM in shuffled order; the quiet study makes one job
whose SEG equals nnU-Net's prediction on the three volumes and references the three series. A
missing channel fails the study's job with a readable reason. Random-weights model
(tests/support/random_model.py)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicom_node.config import config_from_mapping
from dicom_node.demo.phantom import make_phantom, write_ct_series
from dicom_node.node import Node
from dicom_node.storage.journal import JobState
from inference.executor import InProcessExecutor
from inference.series import load_series
from tests.support.node_setup import node_config, received_segs, referenced_series, storescu
from tests.support.random_model import write_random_spec
from tests.support.seg_read import seg_labels_on_grid
from tests.support.store_peers import dcmtk_storescp
from tests.support.tools import dciodvfy, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

RULE = {
    "name": "prostate",
    "match": {"modality": "MR"},
    "models": ["prostate"],
    "channels": [
        {"series_description": "(?i)t2.*"},
        {"series_description": "(?i)adc.*"},
        {"tag": "SeriesDescription", "regex": "(?i).*dwi.*"},
    ],
}


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "pacs"
    with dcmtk_storescp(port, out):
        yield port, out


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_random_spec(
        tmp_path / "spec",
        {"prostate": {"seed": 11, "channels": ("T2", "ADC", "DWI"), "default_args": {"tile_step_size": 1.0}}},
    )


def study(folder: Path, names: tuple[str, ...] = ("T2 TSE ax", "ADC map", "ep2d DWI b800")) -> dict[str, Any]:
    """Three MR series of one study on one grid, each its own image of the phantom, plus a
    localizer the rule must ignore."""
    phantom = make_phantom(shape=(12, 32, 32), seed=6)
    images = {
        "T2 TSE ax": phantom.image,
        "ADC map": np.rint(phantom.image * 0.5 + 40.0),
        "ep2d DWI b800": np.rint(np.clip(-phantom.image * 0.3 + 100.0, -1000, 2000)),
        "localizer": phantom.image,
    }
    study_uid = generate_uid()
    files: dict[str, list[Path]] = {}
    for number, name in enumerate((*names, "localizer"), start=1):
        files[name] = write_ct_series(
            images[name],
            folder / f"s{number}",
            spacing=phantom.spacing,
            study_uid=study_uid,
            series_description=name,
            modality="MR",
            series_number=number,
        )
    return {"files": files, "images": images}


def start(tmp_path: Path, spec: Path, port: int) -> Node:
    config = node_config(tmp_path / "var", spec, port, rule=RULE, quiet_seconds=1.0)
    return Node(config_from_mapping(config, base_dir=tmp_path))


def test_three_series_in_shuffled_order_make_one_seg_equal_to_the_prediction(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    port, out = destination
    made = study(tmp_path / "study")
    files = [p for paths in made["files"].values() for p in paths]
    random.Random(3).shuffle(files)
    with start(tmp_path, spec, port) as node:
        run = storescu(node.port, files)
        assert run.returncode == 0, run.output
        [(_, [seg_path])] = wait_for(lambda: received_segs(out), timeout=180, what="SEG at storescp").items()
        journal = node.journal
        assert journal is not None

        def settled() -> list[Any] | None:
            jobs = journal.list_jobs()
            return jobs if all(j.state not in (JobState.PENDING, JobState.RUNNING) for j in jobs) else None

        jobs = wait_for(settled, timeout=60, what="every job finished")
    [job] = jobs  # one job for the study, made when it was quiet: none per series, none deferred
    assert job.state == JobState.DONE and job.trigger == "study_quiet" and len(job.outputs) == 1
    t2 = load_series(made["files"]["T2 TSE ax"])
    series_uids = {
        str(dcmread(made["files"][n][0], stop_before_pixels=True).SeriesInstanceUID)
        for n in made["images"]
        if n != "localizer"
    }
    assert referenced_series(seg_path) == series_uids
    executor = InProcessExecutor(spec, device="cpu", num_threads=2)
    model = executor.catalog.resolve("prostate")
    channels = [made["images"][n].astype(np.float32) for n in ("T2 TSE ax", "ADC map", "ep2d DWI b800")]
    expected = executor.cache.predict(
        model.model_dir, channels, t2.volume.geometry.spacing, folds=(0,), tile_step_size=1.0
    ).labels
    np.testing.assert_array_equal(seg_labels_on_grid(seg_path, t2.volume.geometry), expected)
    assert dciodvfy(seg_path).errors == []


def test_a_missing_channel_is_a_readable_failure(
    tmp_path: Path, spec: Path, destination: tuple[int, Path]
) -> None:
    port, _ = destination
    made = study(tmp_path / "study", names=("T2 TSE ax", "ADC map"))
    files = [p for paths in made["files"].values() for p in paths]
    with start(tmp_path, spec, port) as node:
        run = storescu(node.port, files)
        assert run.returncode == 0, run.output
        journal = node.journal
        assert journal is not None
        [failed] = wait_for(lambda: journal.list_jobs(state=JobState.FAILED), timeout=120, what="failed job")
    assert failed.error is not None
    assert (
        "rule 'prostate': channel 2 (SeriesDescription '(?i).*dwi.*') matches no series of study"
        in failed.error
    )
    assert "T2 TSE ax" in failed.error and "ADC map" in failed.error
