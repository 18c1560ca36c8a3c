"""Rules with ``channels``: the study's completion makes one job for the study, on the channel series
chosen then; late instances, re-sends and missing channels. The real journal and completion loop,
instance headers filed like the receiver files them, a clock driven by the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from dicom_node.config import RuleConfig
from dicom_node.pipeline.completion import CompletionLoop
from dicom_node.pipeline.routing import RuleSet
from dicom_node.storage.journal import JobInput, JobOutput, JobRow, JobState, Journal
from tests.support.clock import T0, Clock
from tests.support.filed_series import FiledSeries

CHANNELS = [{"series_description": "(?i)t2.*"}, {"series_description": "(?i)adc.*"}]


def channels_rule(**kw: Any) -> RuleConfig:
    data: dict[str, Any] = {
        "name": "p",
        "match": {"modality": "MR"},
        "models": ["m"],
        "destinations": ["pacs"],
        "channels": CHANNELS,
        "series_quiet_seconds": 5,
    }
    data.update(kw)
    return RuleConfig.model_validate(data)


class Study:
    def __init__(self, journal: Journal, storage: Path, clock: Clock, rules: list[RuleConfig]) -> None:
        self.journal, self.storage, self.clock, self.uid = journal, storage, clock, generate_uid()
        ruleset = RuleSet.build(rules)
        self.loop = CompletionLoop(journal, storage_dir=storage, rules=lambda: ruleset, clock=clock)

    def series(self, description: str, at: float, count: int = 3) -> FiledSeries:
        filed = FiledSeries(
            self.storage, self.journal, modality="MR", description=description, study_uid=self.uid
        )
        filed.add_many(at, count)
        return filed

    def run(self, at: float) -> list[JobRow]:
        """One completion pass at ``at``; every model job so far, oldest first."""
        self.clock.now = at
        self.loop.run_once()
        return sorted((j for j in self.journal.list_jobs() if not j.forward), key=lambda j: j.id)


@pytest.fixture
def study(journal: Journal, tmp_path: Path) -> Study:
    return Study(journal, tmp_path / "var", Clock(), [channels_rule()])


def finish(journal: Journal, job: JobRow) -> None:
    claimed = journal.claim_job(job.created_at)
    assert claimed is not None and claimed.id == job.id
    seg = JobOutput(
        f"outputs/{job.series_uid}/job-{job.id}/seg.dcm",
        "seg",
        generate_uid(),
        "1.2.840.10008.5.1.4.1.1.66.4",
    )
    journal.finish_job(job.id, state=JobState.DONE, now=job.created_at, outputs=[seg])


def test_the_quiet_study_makes_one_job_on_the_channel_series_in_selector_order(study: Study) -> None:
    adc = study.series("ADC map", at=T0)
    study.series("localizer", at=T0 + 5)  # fits no channel: not routed to the rule, not an input
    t2 = study.series("t2_tse_tra", at=T0 + 10)
    assert study.run(T0 + 11) == []  # routed; the study received something 1 s ago
    assert study.run(T0 + 14.9) == []
    [job] = study.run(T0 + 15)
    assert job.inputs == (JobInput(t2.uid, 3), JobInput(adc.uid, 3))
    assert (job.series_uid, job.generation, job.trigger, job.state) == (t2.uid, 3, "study_quiet", "pending")
    assert job.args == {}  # the channel selection is not left to the worker
    assert study.run(T0 + 30) == [job]  # nothing more: one job per study


def test_series_arriving_in_the_study_keep_its_job_from_being_made_until_it_is_quiet(study: Study) -> None:
    study.series("T2 ax", at=T0)
    study.series("ADC", at=T0)
    other = study.series("localizer", at=T0, count=1)
    for i in range(1, 30):  # another series of the study keeps arriving, every 4 s (< the 5 s quiet)
        other.add(T0 + 4 * i)
        assert study.run(T0 + 4 * i + 1) == [], i
    [job] = study.run(T0 + 4 * 29 + 5)
    assert job.state == "pending" and job.attempts == 0


def test_a_late_instance_in_any_channel_series_makes_one_new_study_job(study: Study) -> None:
    t2 = study.series("T2 ax", at=T0)
    adc = study.series("ADC", at=T0 + 1)
    [first] = study.run(T0 + 6)
    finish(study.journal, first)
    for k in range(4):  # a burst of late ADC instances
        adc.add(T0 + 20 + k)
        assert len(study.run(T0 + 20.5 + k)) == 1
    jobs = study.run(T0 + 28)
    assert [j.state for j in jobs] == ["done", "pending"]
    assert jobs[1].inputs == (JobInput(t2.uid, 3), JobInput(adc.uid, 7))
    # a late instance while that job waits: it is superseded by the study's next job
    t2.add(T0 + 40)
    jobs = study.run(T0 + 45)
    assert [j.state for j in jobs] == ["done", "superseded", "pending"]
    assert jobs[2].inputs == (JobInput(t2.uid, 4), JobInput(adc.uid, 7))


def test_a_study_job_whose_channel_series_changes_while_it_runs_is_superseded(study: Study) -> None:
    study.series("T2 ax", at=T0)
    adc = study.series("ADC", at=T0)
    [job] = study.run(T0 + 5)
    assert study.journal.claim_job(T0 + 5) is not None
    adc.add(T0 + 6)  # not the job's key series, but one of its inputs
    assert study.journal.finish_job(job.id, state=JobState.DONE, now=T0 + 7) is False
    assert study.journal.get_job(job.id).state == "superseded"  # type: ignore[union-attr]


def test_a_study_completing_again_unchanged_delivers_the_result_again(study: Study) -> None:
    t2 = study.series("T2 ax", at=T0)
    study.series("ADC", at=T0)
    [job] = study.run(T0 + 5)
    finish(study.journal, job)
    before = len(study.journal.list_deliveries())
    # the T2 series completes again at the same generation (what an unchanged re-send does)
    study.journal._query("UPDATE series SET state = 'receiving' WHERE series_uid = ?", (t2.uid,))
    assert study.run(T0 + 60) == [study.journal.get_job(job.id)]  # no new job
    assert len(study.journal.list_deliveries()) == before + 1
    assert study.journal.recent_events(1)[0].kind == "redelivered"


def test_a_missing_channel_is_a_failed_job_naming_the_channel_and_the_studys_series(
    journal: Journal, tmp_path: Path
) -> None:
    from dicom_node.status_report import snapshot, to_text

    three = [*CHANNELS, {"series_description": "(?i).*dwi.*"}]
    study = Study(journal, tmp_path / "var", Clock(), [channels_rule(channels=three)])
    t2 = study.series("T2 ax", at=T0)
    study.series("DWI b800", at=T0)
    [job] = study.run(T0 + 5)
    assert job.state == "failed" and job.series_uid == t2.uid
    assert job.error is not None
    assert "rule 'p': channel 1 (SeriesDescription '(?i)adc.*') matches no series of study" in job.error
    assert "T2 ax" in job.error and "DWI b800" in job.error
    assert journal.recent_events(1)[0].kind == "job_failed"
    assert "channel 1 (SeriesDescription '(?i)adc.*')" in to_text(snapshot(journal))


def test_the_largest_candidate_series_fills_a_channel_and_series_of_other_rules_are_not_used(
    journal: Journal, tmp_path: Path
) -> None:
    other_rule = RuleConfig.model_validate(
        {"name": "other", "match": {"series_description": "ADC other.*"}, "models": ["m2"]}
    )
    study = Study(journal, tmp_path / "var", Clock(), [other_rule, channels_rule()])
    t2 = study.series("T2 ax", count=3, at=T0)
    t2_big = study.series("T2 cor", count=5, at=T0)
    study.series("ADC other rule", count=9, at=T0)
    adc = study.series("ADC", at=T0)
    jobs = study.run(T0 + 5)
    [job] = [j for j in jobs if j.rule_name == "p"]
    assert job.inputs == (JobInput(t2_big.uid, 5), JobInput(adc.uid, 3))
    [warning] = [e for e in journal.recent_events() if e.kind == "job_warning"]
    assert "took T2 cor" in warning.message and t2.uid in warning.message and warning.job_id == job.id


def test_only_image_instances_count_for_a_channel(journal: Journal, tmp_path: Path) -> None:
    """Vendor objects of a private SOP class filed in a channel series neither make it the largest
    candidate nor supply its header."""
    from tests.support.journal_rows import instance_record

    study = Study(journal, tmp_path / "var", Clock(), [channels_rule()])
    t2 = study.series("T2 ax", count=2, at=T0)
    t2_cor = study.series("T2 cor", count=3, at=T0)
    adc = study.series("ADC", at=T0)
    for k in range(3):  # csa objects first in the T2 ax series: it holds 5 instances, 2 images
        sop = generate_uid()
        path = f"spool/{study.uid}/{t2.uid}/{sop}.dcm"
        image = study.storage / journal.instances_of_series(t2.uid)[0].path
        (study.storage / path).write_bytes(image.read_bytes())  # a header that fits the channel
        journal.record_instance(
            instance_record(
                sop,
                t2.uid,
                study=study.uid,
                path=path,
                at=T0 - 1 - k,
                modality="MR",
                description="T2 ax",
                sop_class="1.3.12.2.1107.5.9.1",
            )
        )
    [job] = study.run(T0 + 5)
    assert job.inputs == (JobInput(t2_cor.uid, 3), JobInput(adc.uid, 3))
