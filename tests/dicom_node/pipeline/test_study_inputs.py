"""Which series of a study feed a ``channels`` rule, and when the study is complete for it: the real
journal, instance headers filed like the receiver files them, made-up times."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_node.pipeline.study_inputs import MissingChannel, StudyIncomplete, StudyNotQuiet, study_inputs
from dicom_node.storage.journal import JobSpec, Journal
from tests.support.filed_series import FiledSeries

CHANNELS = [{"series_description": "(?i)t2.*"}, {"series_description": "(?i)adc.*"}]


class Study:
    def __init__(self, journal: Journal, storage: Path) -> None:
        self.journal, self.storage, self.uid = journal, storage, generate_uid()

    def series(self, description: str, at: float, count: int = 3, *, rules: list[str] | None = None) -> str:
        filed = FiledSeries(
            self.storage, self.journal, modality="MR", description=description, study_uid=self.uid
        )
        filed.add_many(at, count)
        self.journal.set_routing(filed.uid, rules=["p"] if rules is None else rules, quiet_seconds=5.0)
        return filed.uid

    def complete(self, series_uid: str) -> None:
        row = self.journal.get_series(series_uid)
        assert row is not None
        self.journal.create_jobs(
            series_uid,
            generation=row.generation,
            jobs=[JobSpec("p", ["m"], [], {})],
            trigger="quiet_period",
            now=0,
        )

    def inputs(self, series_uid: str, now: float) -> list[str]:
        return study_inputs(self.journal, series_uid, "p", CHANNELS, self.storage, now).series_uids


@pytest.fixture
def study(journal: Journal, tmp_path: Path) -> Study:
    return Study(journal, tmp_path / "var")


def test_channels_in_selector_order_once_the_study_is_complete_and_quiet(study: Study) -> None:
    adc = study.series("ADC map", at=100.0)
    t2 = study.series("t2_tse_tra", at=110.0)
    localizer = study.series("localizer", at=105.0)  # fits no channel: ignored
    for uid in (adc, t2, localizer):
        study.complete(uid)
    assert study.inputs(t2, now=120.0) == [t2, adc]


def test_the_series_received_last_runs_the_study(study: Study) -> None:
    adc = study.series("ADC map", at=100.0)
    t2 = study.series("T2 ax", at=110.0)
    study.complete(adc)
    with pytest.raises(StudyIncomplete, match=t2):  # t2 still receiving: its job will run it
        study.inputs(adc, now=200.0)
    study.complete(t2)
    with pytest.raises(StudyIncomplete, match=t2):  # t2 arrived later: its job runs it
        study.inputs(adc, now=200.0)
    assert study.inputs(t2, now=200.0) == [t2, adc]


def test_a_study_not_quiet_yet_waits(study: Study) -> None:
    t2 = study.series("T2 ax", at=100.0)
    adc = study.series("ADC", at=101.0)
    study.complete(t2)
    study.complete(adc)
    with pytest.raises(StudyNotQuiet) as info:
        study.inputs(adc, now=103.0)
    assert info.value.until == pytest.approx(106.0)  # last instance + the series' 5 s quiet period


def test_a_missing_channel_names_the_channel_and_the_studys_series(study: Study) -> None:
    t2 = study.series("T2 ax", at=100.0)
    study.series("DWI b800", at=90.0)
    study.complete(t2)
    with pytest.raises(MissingChannel) as info:
        study.inputs(t2, now=200.0)
    message = str(info.value)
    assert "rule 'p': channel 1 (SeriesDescription '(?i)adc.*') matches no series of study" in message
    assert "T2 ax" in message and "DWI b800" in message


def test_series_routed_elsewhere_are_not_used_and_the_largest_candidate_wins(study: Study) -> None:
    t2 = study.series("T2 ax", at=100.0, count=3)
    t2_big = study.series("T2 cor", at=101.0, count=5)
    study.series("ADC other rule", at=102.0, rules=["other"])
    adc = study.series("ADC", at=103.0)
    for uid in (t2, t2_big, adc):
        study.complete(uid)
    result = study_inputs(study.journal, adc, "p", CHANNELS, study.storage, 200.0)
    assert result.series_uids == [t2_big, adc]
    assert "took T2 cor" in result.warnings[0] and t2 in result.warnings[0]
