"""Multi-series inputs: the series of one study that feed the input channels of a rule with
``channels`` (prostate MRI: T2, ADC, high-b DWI).

A job of such a rule is made when one of its series completes. :func:`study_inputs` looks at every
series of that study the rule may use (routed to the rule, or not routed yet; a series fits the
first channel selector its header matches). The study is complete for the rule when

- no other candidate series is still receiving, and this job's series is the candidate received
  last (else :class:`StudyIncomplete`: the job of that other series, made when it completes, runs the
  study; so one job per study runs);
- the whole study has been quiet for the series' quiet period (else :class:`StudyNotQuiet`: the job
  waits and looks again; a series that starts arriving meanwhile takes over as above).

Then each channel takes the series that fits it (several: the one with most instances, with a
warning). A channel that no series fits: :class:`MissingChannel`, a readable failure of the job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom

from dicom_node.config import ChannelSelector
from dicom_node.pipeline.routing import dicom_text
from dicom_node.storage.journal import InstanceRow, SeriesRow
from dicom_node.storage.journal.states import SeriesState

logger = logging.getLogger(__name__)


class StudyIncomplete(Exception):
    """Another series the rule may use is still arriving; its own job will run the study."""


class StudyNotQuiet(Exception):
    """The study received an instance less than the quiet period ago; look again at ``until``."""

    def __init__(self, message: str, until: float) -> None:
        super().__init__(message)
        self.until = until


class MissingChannel(Exception):
    """The study is complete but no series fits one of the rule's channels."""


class StudyJournal(Protocol):
    def get_series(self, series_uid: str) -> SeriesRow | None: ...
    def series_of_study(self, study_uid: str) -> list[SeriesRow]: ...
    def instances_of_series(self, series_uid: str) -> list[InstanceRow]: ...


@dataclass
class StudyInputs:
    """Instance files per channel (channel order), the series they come from, notes for the log."""

    paths: list[list[Path]]
    series_uids: list[str]
    warnings: list[str] = field(default_factory=list)


def _channel(selectors: Sequence[ChannelSelector], header: pydicom.Dataset) -> int | None:
    for index, selector in enumerate(selectors):
        if all(p.fullmatch(dicom_text(header.get(k))) for k, p in selector.patterns().items()):
            return index
    return None


def study_inputs(
    journal: StudyJournal,
    series_uid: str,
    rule_name: str,
    selectors: Sequence[Mapping[str, Any]],
    storage_dir: Path,
    now: float,
) -> StudyInputs:
    """The channel inputs of ``rule_name``'s job made for ``series_uid`` (see the module docstring)."""
    channels = [ChannelSelector.model_validate(s) for s in selectors]
    series = journal.get_series(series_uid)
    if series is None:
        raise MissingChannel(f"series {series_uid} is not in the journal")
    study = series.study_uid
    found: dict[int, list[tuple[SeriesRow, list[InstanceRow], str]]] = {}
    waiting: list[str] = []
    others: list[str] = []
    rows = journal.series_of_study(study)
    for row in rows:
        if row.rules is not None and rule_name not in row.rules:
            others.append(f"{row.series_description or '(no description)'} ({row.series_uid})")
            continue
        instances = journal.instances_of_series(row.series_uid)
        if not instances:
            continue
        header = pydicom.dcmread(storage_dir / instances[0].path, stop_before_pixels=True)
        index = _channel(channels, header)
        description = row.series_description or "(no description)"
        if index is None:
            others.append(f"{description} ({row.series_uid})")
            continue
        later = row.last_received > series.last_received
        if row.series_uid != series_uid and (row.state == SeriesState.RECEIVING or later):
            waiting.append(f"{description} ({row.series_uid})")
        found.setdefault(index, []).append((row, instances, description))
    if waiting:
        raise StudyIncomplete(f"study {study}: its job for series {', '.join(waiting)} runs it")
    quiet_until = max(r.last_received for r in rows) + (series.quiet_seconds or 0.0)
    if now < quiet_until:
        raise StudyNotQuiet(
            f"study {study} received an instance {quiet_until - now:.1f} s too recently", quiet_until
        )
    result = StudyInputs(paths=[], series_uids=[])
    for index, selector in enumerate(channels):
        candidates = found.get(index, [])
        if not candidates:
            have = [f"{d} ({r.series_uid})" for c in found.values() for r, _, d in c] + others
            raise MissingChannel(
                f"rule {rule_name!r}: channel {index} ({selector.describe()}) matches no series of study "
                f"{study}; its series: {'; '.join(have) or 'none'}"
            )
        candidates.sort(key=lambda c: (-len(c[1]), c[0].first_received))
        row, instances, description = candidates[0]
        if len(candidates) > 1:
            skipped = ", ".join(f"{d} ({r.series_uid})" for r, _, d in candidates[1:])
            result.warnings.append(
                f"rule {rule_name!r}: channel {index} fits several series; took {description} "
                f"({row.series_uid}, most instances), not {skipped}"
            )
        result.paths.append([storage_dir / i.path for i in instances])
        result.series_uids.append(row.series_uid)
    return result
