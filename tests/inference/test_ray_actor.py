"""The predictor actor as a plain object (no Ray): series bytes in, SEG bytes out, the same SEG as
the in-process executor's; a bad job answered as data; which models it holds warm."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.ray_actor import PredictorActor
from inference.ray_jobs import RayJob, SeriesFile
from tests.support.node_setup import phantom_series

SPEC = Path(__file__).resolve().parents[2] / "model-serve-spec.yaml"


@pytest.fixture(scope="module")
def actor() -> PredictorActor:
    return PredictorActor(str(SPEC), device="cpu", max_models=2, num_threads=1)


def job_of(files: list[Path]) -> RayJob:
    inputs = [[SeriesFile(name=f.name, data=f.read_bytes()) for f in files]]
    return RayJob(inputs=inputs, request={"models": ["demo"]})


def test_series_bytes_come_back_as_a_seg_and_the_model_stays_warm(
    actor: PredictorActor, tmp_path: Path
) -> None:
    from inference.api import InferenceRequest
    from inference.executor import InProcessExecutor

    files = phantom_series(tmp_path / "ct", slices=8)
    reply = actor.run(job_of(files))
    assert reply.status == "ok", reply.message
    [blob] = reply.outputs
    assert blob.kind == "seg" and blob.data is not None and blob.data[128:132] == b"DICM"
    assert {"demo", "phantom"} <= set(reply.warm)  # id and alias: routing finds it either way
    local = InProcessExecutor(SPEC, device="cpu").run(
        InferenceRequest(inputs=[files], models=["demo"], output_dir=tmp_path / "local")
    )
    assert blob.sop_instance_uid == local.outputs[0].sop_instance_uid


def test_a_bad_series_is_an_error_reply_not_a_dead_actor(actor: PredictorActor) -> None:
    job = RayJob(inputs=[[SeriesFile(name="x.dcm", data=b"not dicom")]], request={"models": ["demo"]})
    reply = actor.run(job)
    assert reply.status == "error"
    assert reply.error_type == "SeriesError" and reply.message
