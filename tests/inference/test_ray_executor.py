"""The Ray executor without a cluster: an unreachable cluster is a retry-later answer (never a
hang, never a failed job), routing prefers warm idle actors, outputs stay in the job's folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inference.api import InferenceRequest, RetryLater
from inference.ray_bridge import Bridge, _Slot, _Task
from inference.ray_executor import RayExecutor, RaySettings, RemoteInferenceError
from inference.ray_jobs import OutputBlob
from tests.support.tools import free_port

SPEC = Path(__file__).resolve().parents[2] / "model-serve-spec.yaml"


def test_an_unreachable_cluster_is_a_retry_later_with_the_reason(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    executor = RayExecutor(RaySettings(spec_path=SPEC, address=address, retry_delay_seconds=7))
    request = InferenceRequest(inputs=[[tmp_path / "a.dcm"]], models=["demo"], output_dir=tmp_path / "out")
    try:
        for _ in range(2):  # the next job tries again (a fresh bridge), it does not hang on the first
            started = time.monotonic()
            with pytest.raises(RetryLater) as info:
                executor.run(request)
            assert info.value.retry_after == 7
            assert address in str(info.value) and "unreachable" in str(info.value)
            assert time.monotonic() - started < 30
    finally:
        executor.close()


def _bridge(slots: list[_Slot]) -> Bridge:
    bridge = object.__new__(Bridge)  # routing only: no ray, no actors
    bridge.slots = slots
    return bridge


def _task(models: tuple[str, ...], tried: list[str] | None = None) -> _Task:
    return _Task(job_id=1, job_ref=None, models=models, queued_at=0.0, tried=tried or [])


def _slot(index: int, *, busy: int = 0, warm: set[str] | None = None, placed: bool = True) -> _Slot:
    return _Slot(index=index, placed=placed, name=f"actor-{index}", busy=busy, warm=warm or set())


def test_a_job_goes_to_an_idle_actor_that_holds_its_model() -> None:
    slots = [_slot(0), _slot(1, warm={"demo"}), _slot(2, busy=1, warm={"demo"})]
    assert _bridge(slots)._choose(_task(("demo",))) is slots[1]


def test_a_busy_warm_actor_is_passed_over_for_an_idle_one() -> None:
    slots = [_slot(0, busy=1, warm={"demo"}), _slot(1, warm={"other"})]
    assert _bridge(slots)._choose(_task(("demo",))) is slots[1]


def test_with_every_actor_busy_the_warm_one_queues_the_job() -> None:
    slots = [_slot(0, busy=1), _slot(1, busy=2, warm={"demo"})]
    assert _bridge(slots)._choose(_task(("demo",))) is slots[1]


def test_a_retry_avoids_the_actor_it_already_ran_on() -> None:
    slots = [_slot(0, warm={"demo"}), _slot(1)]
    assert _bridge(slots)._choose(_task(("demo",), tried=["actor-0"])) is slots[1]


def test_no_actor_placed_yet_means_the_job_waits() -> None:
    assert _bridge([_slot(0, placed=False)])._choose(_task(("demo",))) is None


def test_an_output_named_outside_the_job_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RemoteInferenceError):
        RayExecutor._place(tmp_path / "job", OutputBlob(name="../../etc/x", kind="seg", data=b"x"))
    assert not (tmp_path / "etc").exists()
