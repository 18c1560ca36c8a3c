"""The in-process executor as the node's worker uses it: the Executor interface, several threads
calling it at once, warm-up, and device choice."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from dicom_node.demo.phantom import make_phantom, write_ct_series
from inference.api import Executor, InferenceRequest, InferenceResult
from inference.errors import PredictionError
from inference.executor import InProcessExecutor
from inference.series import load_series
from tests.support.random_model import write_random_spec
from tests.support.seg_read import seg_labels_on_grid


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spec")
    return write_random_spec(
        root,
        {
            "organ": {"seed": 1, "default_args": {"tile_step_size": 1.0}},
            "other": {"seed": 2, "default_args": {"tile_step_size": 1.0}},
        },
    )


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    root = tmp_path_factory.mktemp("series")
    return [
        write_ct_series(make_phantom(shape=(16, 32, 32), seed=seed), root / f"s{seed}") for seed in range(3)
    ]


def test_in_process_executor_is_an_executor(spec: Path) -> None:
    executor = InProcessExecutor(spec, device="cpu")
    assert isinstance(executor, Executor)
    assert executor.device.type == "cpu"


def test_expire_drops_warm_predictors_and_the_next_use_loads_again(spec: Path) -> None:
    executor = InProcessExecutor(spec, device="cpu")
    executor.warm_up("organ")
    assert len(executor.cache) == 1
    executor.expire()
    assert len(executor.cache) == 0
    executor.warm_up("organ")
    assert executor.cache.loads == 2


def test_request_as_the_worker_builds_it(spec: Path, series: list[list[Path]], tmp_path: Path) -> None:
    executor = InProcessExecutor(str(spec), device="cpu")
    request = InferenceRequest(
        inputs=[[str(p) for p in series[0]]],
        models=["organ"],
        args={},
        output_dir=tmp_path / "job-1",
        empty_result="empty_seg",
    )
    result = executor.run(request)
    assert isinstance(result, InferenceResult)
    [out] = result.outputs
    assert out.path.parent == tmp_path / "job-1" and out.path.is_file()
    assert out.sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4"
    assert dcmread(out.path, stop_before_pixels=True).SOPInstanceUID == out.sop_instance_uid
    with pytest.raises(ValueError, match="empty_result"):
        InferenceRequest(inputs=[series[0]], models=["organ"], output_dir=tmp_path, empty_result="never")  # type: ignore[arg-type]


def test_concurrent_calls_give_the_sequential_results(
    spec: Path, series: list[list[Path]], tmp_path: Path
) -> None:
    executor = InProcessExecutor(spec, device="cpu", num_threads=1)
    jobs = [(i, model) for i in range(3) for model in ("organ", "other")]

    def request(i: int, model: str, tag: str) -> InferenceRequest:
        return InferenceRequest(
            inputs=[series[i]], models=[model], output_dir=tmp_path / tag / f"{model}-{i}"
        )

    sequential = {job: executor.run(request(*job, "seq")) for job in jobs}
    assert executor.cache.loads == 2
    results: dict[tuple[int, str], InferenceResult] = {}
    errors: list[BaseException] = []

    def run(job: tuple[int, str]) -> None:
        try:
            results[job] = executor.run(request(*job, "par"))
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert executor.cache.loads == 2  # still warm: nothing reloaded
    for job in jobs:
        geometry = load_series(series[job[0]]).volume.geometry
        mine = seg_labels_on_grid(results[job].outputs[0].path, geometry)
        np.testing.assert_array_equal(mine, seg_labels_on_grid(sequential[job].outputs[0].path, geometry))
        assert results[job].outputs[0].sop_instance_uid == sequential[job].outputs[0].sop_instance_uid


def test_warm_up_loads_once(spec: Path) -> None:
    executor = InProcessExecutor(spec, device="cpu")
    executor.warm_up("organ")
    executor.warm_up("organ")
    assert executor.cache.loads == 1
    executor.warm_up("other", args={"use_folds": "all"})
    assert executor.cache.loads == 2


def test_cuda_without_cuda_is_refused(spec: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(PredictionError, match="CUDA is not available"):
        InProcessExecutor(spec, device="cuda")
