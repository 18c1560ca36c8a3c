"""Inference workers with a stub Executor (the interface the node talks to; the real in-process
executor runs in test_node.py / test_faults.py): request contents, outcomes, deliveries, retries,
failures, superseded results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import SegmentationStorage, generate_uid

from dicom_node.pipeline.worker import Worker
from dicom_node.storage.journal import JobOutput, JobSpec, Journal
from inference.api import InferenceRequest, InferenceResult, OutputFile, RetryLater
from inference.errors import (
    ArgsError,
    InsufficientGpuMemoryError,
    PredictionError,
    SegWriteError,
    SeriesError,
    SpecError,
)
from inference.uids import derive_uid
from tests.support.clock import T0, Clock
from tests.support.journal_rows import instance_record
from tests.support.tools import wait_for


@dataclass
class StubExecutor:
    """Writes one SEG-named file per request (UID derived from the series, like the real one) unless
    told to fail or to find nothing."""

    fail_with: list[Exception] = field(default_factory=list)
    empty: bool = False
    nifti: bool = False
    during: Callable[[InferenceRequest], None] | None = None
    requests: list[InferenceRequest] = field(default_factory=list)

    def run(self, request: InferenceRequest) -> InferenceResult:
        self.requests.append(request)
        if self.during is not None:
            self.during(request)
        if self.fail_with:
            raise self.fail_with.pop(0)
        series = request.inputs[0][0].parent.name
        outputs = []
        if not (self.empty and request.empty_result == "skip"):
            path = request.output_dir / "seg.dcm"
            path.write_bytes(b"stand-in SEG")
            outputs.append(
                OutputFile(
                    path, "seg", derive_uid(series, request.models[0], "1", "instance"), SegmentationStorage
                )
            )
        if self.nifti:
            nii = request.output_dir / "labels.nii.gz"
            nii.write_bytes(b"nifti")
            outputs.append(OutputFile(nii, "nifti_labels"))
        return InferenceResult(
            outputs=outputs, empty=self.empty, timings={"load": 0.1, "inference": 0.2}, warnings=["a warning"]
        )


def add_instance(journal: Journal, storage: Path, series: str, at: float = T0) -> Path:
    sop = generate_uid()
    rel = f"spool/1.2.3/{series}/{sop}.dcm"
    (storage / rel).parent.mkdir(parents=True, exist_ok=True)
    (storage / rel).write_bytes(b"instance")
    journal.record_instance(instance_record(sop, series, study="1.2.3", path=rel, size=8, assoc=None, at=at))
    return storage / rel


def queue_job(
    journal: Journal, storage: Path, *, instances: int = 3, destinations: tuple[str, ...] = ("pacs",)
) -> tuple[str, list[Path], int]:
    series = generate_uid()
    paths = [add_instance(journal, storage, series) for _ in range(instances)]
    journal.set_routing(series, rules=["ct"])
    [job_id] = journal.create_jobs(
        series,
        generation=instances,
        jobs=[JobSpec("ct", ["demo"], list(destinations), {"folds": [0]})],
        trigger="quiet_period",
        now=T0,
    )
    return series, paths, job_id


def make_worker(journal: Journal, storage: Path, executor: StubExecutor, **kw: Any) -> Worker:
    kw.setdefault("clock", Clock())
    return Worker(journal, executor, storage_dir=storage, **kw)


def test_done_job_queues_one_delivery_per_destination(journal: Journal, tmp_path: Path) -> None:
    executor = StubExecutor()
    woken: list[int] = []
    worker = make_worker(journal, tmp_path, executor, on_deliveries=lambda: woken.append(1))
    series, paths, job_id = queue_job(journal, tmp_path, destinations=("pacs", "archive"))
    worker.run_next()
    [request] = executor.requests
    assert sorted(request.inputs[0]) == sorted(paths)
    assert request.models == ["demo"] and request.args == {"folds": [0]}
    assert request.output_dir == tmp_path / "outputs" / series / f"job-{job_id}"
    assert request.empty_result == "empty_seg"
    job = journal.get_job(job_id)
    assert job is not None and job.state == "done" and job.error is None
    uid = derive_uid(series, "demo", "1", "instance")
    assert job.outputs == (
        JobOutput(f"outputs/{series}/job-{job_id}/seg.dcm", "seg", uid, SegmentationStorage),
    )
    assert job.timings["inference"] == 0.2 and "job" in job.timings
    deliveries = journal.list_deliveries()
    assert sorted(d.destination for d in deliveries) == ["archive", "pacs"]
    assert {d.sop_instance_uid for d in deliveries} == {uid}
    assert all((tmp_path / d.path).is_file() for d in deliveries)
    assert woken == [1]
    assert journal.recent_events(level="warning")[0].message == "a warning"


def test_empty_result_with_skip_sends_nothing(journal: Journal, tmp_path: Path) -> None:
    worker = make_worker(journal, tmp_path, StubExecutor(empty=True), empty_result="skip")
    _, _, job_id = queue_job(journal, tmp_path)
    worker.run_next()
    assert journal.get_job(job_id).state == "empty"  # type: ignore[index]
    assert journal.list_deliveries() == []


def test_empty_result_with_empty_seg_sends_the_empty_seg(journal: Journal, tmp_path: Path) -> None:
    worker = make_worker(journal, tmp_path, StubExecutor(empty=True), empty_result="empty_seg")
    _, _, job_id = queue_job(journal, tmp_path)
    worker.run_next()
    assert journal.get_job(job_id).state == "empty"  # type: ignore[index]
    assert len(journal.list_deliveries()) == 1


def test_nifti_outputs_are_kept_not_sent(journal: Journal, tmp_path: Path) -> None:
    worker = make_worker(journal, tmp_path, StubExecutor(nifti=True))
    _, _, job_id = queue_job(journal, tmp_path)
    worker.run_next()
    kinds = [o.kind for o in journal.get_job(job_id).outputs]  # type: ignore[index]
    assert kinds == ["seg", "nifti_labels"]
    assert [d.path.endswith("seg.dcm") for d in journal.list_deliveries()] == [True]


def test_an_unexpected_error_is_retried_then_fails_with_the_reason(journal: Journal, tmp_path: Path) -> None:
    executor = StubExecutor(fail_with=[PredictionError("worker died"), PredictionError("worker died")])
    worker = make_worker(journal, tmp_path, executor, max_attempts=2)
    series, _, job_id = queue_job(journal, tmp_path)
    worker.run_next()
    job = journal.get_job(job_id)
    assert job is not None and (job.state, job.attempts) == ("pending", 1)
    assert job.error == "PredictionError: worker died"
    worker.run_next()
    job = journal.get_job(job_id)
    assert job is not None and (job.state, job.attempts) == ("failed", 2)
    assert job.error == "PredictionError: worker died"
    assert journal.list_deliveries() == []
    event = journal.recent_events(level="error")[0]
    assert event.kind == "job_failed" and event.series_uid == series
    assert "worker died" in event.message and f"job {job_id}" in event.message
    assert worker.run_next() is None  # nothing left to claim


@pytest.mark.parametrize(
    "error",
    [
        SeriesError("gap between slices 3 and 5"),
        SpecError("model folder lacks plans.json"),
        ArgsError("use_folds: fold 7 not trained"),
        SegWriteError("too many segments"),
    ],
)
def test_a_deterministic_failure_fails_at_once(journal: Journal, tmp_path: Path, error: Exception) -> None:
    executor = StubExecutor(fail_with=[error])
    worker = make_worker(journal, tmp_path, executor, max_attempts=3)
    _, _, job_id = queue_job(journal, tmp_path)
    worker.run_next()
    job = journal.get_job(job_id)
    assert job is not None and (job.state, job.attempts) == ("failed", 1)
    assert job.error == f"{type(error).__name__}: {error}"
    assert worker.run_next() is None and len(executor.requests) == 1


def test_torch_out_of_memory_waits_and_retries(journal: Journal, tmp_path: Path) -> None:
    class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError, by name
        pass

    executor = StubExecutor(fail_with=[OutOfMemoryError("CUDA out of memory")])
    worker = make_worker(journal, tmp_path, executor, max_attempts=1, retry_delay=30)
    _, _, job_id = queue_job(journal, tmp_path)
    worker.run_next()
    job = journal.get_job(job_id)
    assert job is not None and job.state == "pending" and job.not_before is not None


def test_insufficient_gpu_memory_waits_and_retries(journal: Journal, tmp_path: Path) -> None:
    clock = Clock()
    executor = StubExecutor(fail_with=[InsufficientGpuMemoryError("needs 6 GiB, 2 GiB free")])
    worker = make_worker(journal, tmp_path, executor, max_attempts=1, retry_delay=30, clock=clock)
    _, _, job_id = queue_job(journal, tmp_path)
    worker.run_next()
    job = journal.get_job(job_id)
    assert job is not None and job.state == "pending"  # retryable: not failed despite max_attempts=1
    assert "needs 6 GiB" in job.error
    assert journal.next_job_time() == pytest.approx(T0 + 30)
    assert worker.run_next() == pytest.approx(T0 + 30)  # not due yet: nothing claimed
    assert len(executor.requests) == 1
    clock.now = T0 + 30
    worker.run_next()
    assert journal.get_job(job_id).state == "done"  # type: ignore[index]
    assert journal.recent_events(level="warning")[-1].kind == "job_retry"


def test_an_executor_that_asks_to_retry_later_is_retried_after_its_delay(
    journal: Journal, tmp_path: Path
) -> None:
    """A remote executor (cluster unreachable) says when to come back; the worker waits that long,
    and such refusals do not count against max_attempts."""
    clock = Clock()
    busy = [RetryLater("cluster unreachable", retry_after=5), RetryLater("still unreachable", retry_after=5)]
    executor = StubExecutor(fail_with=list(busy))
    worker = make_worker(journal, tmp_path, executor, max_attempts=1, retry_delay=300, clock=clock)
    _, _, job_id = queue_job(journal, tmp_path)
    worker.run_next()
    assert journal.next_job_time() == pytest.approx(T0 + 5)
    clock.now = T0 + 5
    worker.run_next()
    assert journal.next_job_time() == pytest.approx(T0 + 10)
    clock.now = T0 + 10
    worker.run_next()
    assert journal.get_job(job_id).state == "done"  # type: ignore[union-attr]
    assert len(executor.requests) == 3


def test_a_job_that_keeps_coming_back_gives_up(journal: Journal, tmp_path: Path) -> None:
    """A job put back by restarts again and again (say the process dies in it) ends failed."""
    executor = StubExecutor()
    worker = make_worker(journal, tmp_path, executor, max_attempts=1, max_retryable_attempts=2)
    _, _, job_id = queue_job(journal, tmp_path)
    for _ in range(2):
        assert journal.claim_job(T0) is not None
        journal.recover()
    worker.run_next()
    job = journal.get_job(job_id)
    assert job is not None and job.state == "failed" and "gave up after 2 attempt(s)" in job.error
    assert executor.requests == []


def test_the_nodes_data_set_limit_reaches_the_executor(journal: Journal, tmp_path: Path) -> None:
    """Series loading refuses deflated inputs by the node's max_dataset_bytes, not a limit of its own."""
    executor = StubExecutor()
    queue_job(journal, tmp_path)
    make_worker(journal, tmp_path, executor, max_dataset_bytes=5 << 20).run_next()
    assert [r.max_inflated_bytes for r in executor.requests] == [5 << 20]


def test_result_of_a_series_that_changed_meanwhile_is_superseded(journal: Journal, tmp_path: Path) -> None:
    series_box: dict[str, str] = {}
    executor = StubExecutor(during=lambda req: add_instance(journal, tmp_path, series_box["uid"]))
    worker = make_worker(journal, tmp_path, executor)
    series, _, job_id = queue_job(journal, tmp_path)
    series_box["uid"] = series
    worker.run_next()
    assert journal.get_job(job_id).state == "superseded"  # type: ignore[index]
    assert journal.list_deliveries() == []
    assert journal.get_series(series).state == "receiving"  # type: ignore[index]


def test_leftover_output_folder_is_replaced(journal: Journal, tmp_path: Path) -> None:
    worker = make_worker(journal, tmp_path, StubExecutor())
    series, _, job_id = queue_job(journal, tmp_path)
    stale = tmp_path / "outputs" / series / f"job-{job_id}" / "half-written.dcm"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    worker.run_next()
    assert not stale.exists()
    assert journal.get_job(job_id).state == "done"  # type: ignore[index]


def test_worker_threads_pick_up_woken_jobs(journal: Journal, tmp_path: Path) -> None:
    executor = StubExecutor()
    worker = Worker(journal, executor, storage_dir=tmp_path, threads=2, max_poll=30)
    worker.start()
    try:
        ids = [queue_job(journal, tmp_path)[2] for _ in range(3)]
        worker.wake()
        wait_for(
            lambda: all(journal.get_job(i).state == "done" for i in ids),  # type: ignore[index]
            timeout=20,
            what="3 jobs done",
        )
        assert len(executor.requests) == 3
    finally:
        worker.stop()


def test_a_job_that_fails_outside_the_executor_fails_alone(journal: Journal, tmp_path: Path) -> None:
    """The output folder of one job cannot be created (a file stands in its way): that job is retried
    then failed with the reason; the next job runs and delivers."""
    bad_series, _, bad_job = queue_job(journal, tmp_path)
    good_series, _, good_job = queue_job(journal, tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / bad_series).write_bytes(b"in the way")
    executor = StubExecutor()
    worker = make_worker(journal, tmp_path, executor, max_attempts=2, retry_delay=0.0)
    for _ in range(4):
        worker.run_next()
    bad, good = journal.get_job(bad_job), journal.get_job(good_job)
    assert bad is not None and good is not None
    assert (bad.state, bad.attempts) == ("failed", 2)
    assert bad.error is not None and "unexpected error" in bad.error and "in the way" not in bad.error
    assert good.state == "done"
    assert [r.inputs[0][0].parent.name for r in executor.requests] == [good_series]
    assert [d.job_id for d in journal.list_deliveries()] == [good_job]


def test_a_job_that_takes_the_process_down_is_failed_after_max_attempts(
    journal: Journal, tmp_path: Path
) -> None:
    """Each claim counts an attempt; the node dies during the job (claimed, never finished, the
    journal recovered at restart) twice: the third claim fails it with the reason, the next job runs."""
    _, _, crashing = queue_job(journal, tmp_path)
    _, _, next_job = queue_job(journal, tmp_path)
    for _ in range(2):
        claimed = journal.claim_job(T0)
        assert claimed is not None and claimed.id == crashing
        journal.recover()  # the restart after the crash
    executor = StubExecutor()
    worker = make_worker(journal, tmp_path, executor, max_attempts=2)
    worker.run_next()
    failed = journal.get_job(crashing)
    assert failed is not None and failed.state == "failed"
    assert failed.error is not None and "interrupted: attempt 2" in failed.error
    assert executor.requests == []
    worker.run_next()
    done = journal.get_job(next_job)
    assert done is not None and done.state == "done"


def test_waiting_for_the_executor_does_not_use_up_attempts(journal: Journal, tmp_path: Path) -> None:
    """A cluster outage longer than max_retryable_attempts rounds of RetryLater leaves the job
    waiting (pending, attempts not grown), and it runs once the executor takes it."""
    clock = Clock()
    rounds = 30
    executor = StubExecutor(fail_with=[RetryLater("cluster unreachable", retry_after=60)] * rounds)
    worker = make_worker(journal, tmp_path, executor, max_attempts=2, clock=clock)
    _, _, job_id = queue_job(journal, tmp_path)
    for i in range(rounds):
        clock.now = T0 + 60 * i
        worker.run_next()
        job = journal.get_job(job_id)
        assert job is not None and job.state == "pending", (i, job)
        assert job.attempts == 0
    clock.now = T0 + 60 * rounds
    worker.run_next()
    job = journal.get_job(job_id)
    assert job is not None and job.state == "done" and job.attempts == 1
    assert len(executor.requests) == rounds + 1


def test_a_crash_loop_after_waiting_still_fails_the_job(journal: Journal, tmp_path: Path) -> None:
    """Waits are given back, crashes are not: after RetryLater rounds, a job that takes the process
    down on every claim (claimed, never finished, recovered at restart) ends failed."""
    clock = Clock()
    executor = StubExecutor(fail_with=[RetryLater("GPU busy", retry_after=0)] * 5)
    worker = make_worker(journal, tmp_path, executor, max_attempts=2, clock=clock)
    _, _, job_id = queue_job(journal, tmp_path)
    for _ in range(5):
        worker.run_next()
    for _ in range(2):
        assert journal.claim_job(clock.now) is not None
        journal.recover()
    worker.run_next()
    job = journal.get_job(job_id)
    assert job is not None and job.state == "failed" and "interrupted: attempt 2" in (job.error or "")
    assert len(executor.requests) == 5


def test_a_study_job_runs_on_the_image_instances_of_its_input_series_in_channel_order(
    journal: Journal, tmp_path: Path
) -> None:
    from dicom_node.storage.journal import JobInput
    from tests.support.journal_rows import instance_record

    adc = generate_uid()
    adc_paths = [add_instance(journal, tmp_path, adc) for _ in range(2)]
    t2 = generate_uid()
    t2_paths = [add_instance(journal, tmp_path, t2) for _ in range(3)]
    csa = f"spool/1.2.3/{t2}/csa.dcm"  # a vendor object filed in the T2 series: never an input
    (tmp_path / csa).write_bytes(b"csa")
    journal.record_instance(
        instance_record(generate_uid(), t2, study="1.2.3", path=csa, sop_class="1.3.12.2.1107.5.9.1")
    )
    job_id = journal.create_study_job(
        "1.2.3",
        JobSpec("p", ["demo"], ["pacs"], {}),
        inputs=[JobInput(t2, 4), JobInput(adc, 2)],
        trigger="study_quiet",
        now=T0,
    )
    assert job_id is not None
    executor = StubExecutor()
    make_worker(journal, tmp_path, executor).run_next()
    [request] = executor.requests
    assert [sorted(i) for i in request.inputs] == [sorted(t2_paths), sorted(adc_paths)]
    assert request.input_versions is not None and len(set(request.input_versions)) == 2
    assert request.output_dir == tmp_path / "outputs" / t2 / f"job-{job_id}"
    job = journal.get_job(job_id)
    assert job is not None and job.state == "done"
    add_instance(journal, tmp_path, adc)  # the ADC series changes: its content token too
    journal.manual_retry_job(job_id, now=T0)
    make_worker(journal, tmp_path, executor).run_next()
    assert executor.requests[1].input_versions is not None
    assert executor.requests[1].input_versions[0] == request.input_versions[0]
    assert executor.requests[1].input_versions[1] != request.input_versions[1]


def test_a_one_series_job_sends_no_content_tokens(journal: Journal, tmp_path: Path) -> None:
    executor = StubExecutor()
    queue_job(journal, tmp_path)
    make_worker(journal, tmp_path, executor).run_next()
    assert executor.requests[0].input_versions is None  # its SEG UIDs: series and model alone
