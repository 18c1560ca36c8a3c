"""Multi-series inputs: which series of one study feed the input channels of a rule with
``channels`` (prostate MRI: T2, ADC, high-b DWI).

*When* is not decided here: a ``channels`` rule completes on the study (``complete: study``), so
the completion loop calls :func:`choose_channels` once the study has been quiet and the series that
completed are ``queued``; its answer becomes the inputs of the study's one job (journal
``create_study_job``). The candidates are the series of the study routed to the rule (routing
already checked that they fit a channel) that hold an image a model can take (vendor objects, SR,
SEG filed in a series are never inputs); a series fits the first channel selector its header (of an
image instance) matches.

- a candidate still receiving: None (its own completion makes the study job, so one job per study);
- each channel takes the series that fits it (several: the one with most images, with a warning);
- a channel that no series fits: :class:`MissingChannel`, a readable reason (the study's job is then
  recorded ``failed`` with it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset

from dicom_node.config import ChannelSelector
from dicom_node.errors import UnreadableDatasetError
from dicom_node.net.contexts import is_image_storage
from dicom_node.pipeline.routing import dicom_text
from dicom_node.storage.header import read_routing_header
from dicom_node.storage.journal import InstanceRow, JobInput, SeriesRow
from dicom_node.storage.journal.states import SeriesState

logger = logging.getLogger(__name__)


class MissingChannel(Exception):
    """The study is complete but no series fits one of the rule's channels."""

    def __init__(self, message: str, found: Sequence[JobInput]) -> None:
        super().__init__(message)
        self.found = list(found)  # the series that fit some channel, in channel order


class StudyJournal(Protocol):
    def series_of_study(self, study_uid: str) -> list[SeriesRow]: ...
    def instances_of_series(self, series_uid: str) -> list[InstanceRow]: ...


@dataclass
class StudyInputs:
    """The series chosen per channel (channel order, at their generation), notes for the log."""

    inputs: list[JobInput]
    warnings: list[str] = field(default_factory=list)

    @property
    def series_uids(self) -> list[str]:
        return [i.series_uid for i in self.inputs]


def image_instances(rows: Sequence[InstanceRow]) -> list[InstanceRow]:
    """The instances of a series a model may take (image storage SOP classes only)."""
    return [r for r in rows if is_image_storage(r.sop_class_uid)]


def _channel(selectors: Sequence[ChannelSelector], header: Dataset) -> int | None:
    for index, selector in enumerate(selectors):
        if all(p.fullmatch(dicom_text(header.get(k))) for k, p in selector.patterns().items()):
            return index
    return None


def choose_channels(
    journal: StudyJournal,
    study_uid: str,
    rule_name: str,
    channels: Sequence[ChannelSelector],
    storage_dir: Path,
) -> StudyInputs | None:
    """The series of ``study_uid`` feeding each of ``rule_name``'s channels (module docstring)."""
    found: dict[int, list[tuple[SeriesRow, int, str]]] = {}
    others: list[str] = []
    for row in journal.series_of_study(study_uid):
        if row.rules is None or rule_name not in row.rules:
            continue
        description = f"{row.series_description or '(no description)'} ({row.series_uid})"
        images = image_instances(journal.instances_of_series(row.series_uid))
        if not images:
            continue
        try:
            header = read_routing_header(storage_dir / images[0].path)
        except (OSError, UnreadableDatasetError) as exc:
            logger.warning("study %s: series %s not used: %s", study_uid, row.series_uid, exc)
            others.append(description)
            continue
        index = _channel(channels, header)
        if index is None:
            others.append(description)
            continue
        if row.state == SeriesState.RECEIVING:
            return None
        found.setdefault(index, []).append((row, len(images), description))
    result = StudyInputs(inputs=[])
    missing: list[str] = []
    for index, selector in enumerate(channels):
        candidates = found.get(index, [])
        if not candidates:
            missing.append(f"channel {index} ({selector.describe()})")
            continue
        candidates.sort(key=lambda c: (-c[1], c[0].first_received))
        row, _, description = candidates[0]
        if len(candidates) > 1:
            skipped = ", ".join(d for _, _, d in candidates[1:])
            result.warnings.append(
                f"rule {rule_name!r}: channel {index} fits several series; took {description}"
                f" (most images), not {skipped}"
            )
        result.inputs.append(JobInput(row.series_uid, row.generation))
    if missing:
        have = [d for c in found.values() for _, _, d in c] + others
        raise MissingChannel(
            f"rule {rule_name!r}: {', '.join(missing)} matches no series of study {study_uid};"
            f" its series: {'; '.join(have) or 'none'}",
            result.inputs,
        )
    return result
