"""Values passed to and returned by the journal: typed rows, decoded from SQLite once, here.

Every row is a frozen dataclass with the table's columns; states are the enums of
:mod:`dicom_node.storage.journal.states`; JSON columns (models, destinations, args, outputs, timings,
rules) are decoded into typed fields. ``JobRow.args`` stays a mapping: it is free-form model arguments.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from dicom_node.storage.journal.states import DeliveryState, JobState, SeriesState, Trigger


@dataclass(frozen=True)
class InstanceRecord:
    """A filed instance, as the receiver (or the start-up reconciliation) records it."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    path: str
    size: int
    called_ae: str
    calling_ae: str
    association_id: str | None
    received_at: float
    modality: str = ""
    series_description: str = ""
    expected_count: int | None = None  # ImagesInAcquisition
    acquisition: str = ""  # AcquisitionNumber
    digest: str | None = None  # of the data set bytes (no file meta): dicom_node.storage.digest


@dataclass(frozen=True)
class JobSpec:
    """What a matched rule asks for a completed series: run ``models``, or (``forward``) send the
    received instances themselves to ``destinations``."""

    rule_name: str
    models: Sequence[str]
    destinations: Sequence[str]
    args: Mapping[str, Any]
    forward: bool = False


@dataclass(frozen=True)
class JobInput:
    """One input series of a study job (a rule with ``channels``), at the generation it was chosen."""

    series_uid: str
    generation: int


@dataclass(frozen=True)
class RecordOutcome:
    """What :meth:`Journal.record_instance` did."""

    replaced: bool  # the SOP Instance UID was known already
    old_path: str | None  # the previous file, when it lay elsewhere (caller deletes it)
    late: bool  # the series already had a job for an earlier generation
    unchanged: bool = False  # the same SOP instance with byte-identical content: no new generation


@dataclass(frozen=True)
class JobOutput:
    """One file a job wrote (path relative to storage_dir when it lies inside it)."""

    path: str
    kind: str  # seg | rtstruct | nifti | ...
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None


@dataclass(frozen=True)
class DeliverySpec:
    """A delivery :meth:`Journal.finish_job` queues: one result file to one destination."""

    destination: str
    path: str  # relative to storage_dir
    sop_instance_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class InstanceRow:
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    path: str  # relative to storage_dir
    size: int
    called_ae: str
    calling_ae: str
    association_id: str | None
    received_at: float
    acquisition: str = ""  # AcquisitionNumber as sent
    images_in_acquisition: int | None = None  # ImagesInAcquisition as sent
    digest: str | None = None  # of the data set bytes as received: dicom_node.storage.digest


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    study_uid: str
    modality: str
    series_description: str
    called_ae: str
    calling_ae: str
    first_received: float
    last_received: float
    instance_count: int
    expected_count: int | None
    generation: int
    state: SeriesState
    rules: tuple[str, ...] | None  # None until routed
    quiet_seconds: float | None
    complete_on_release: bool
    use_expected_count: bool
    last_association_id: str | None
    released: bool
    routing_note: str | None
    completions: int = 0  # times it completed; later completions are by quiet period only
    complete_study: bool = False  # completes when its whole study is quiet


@dataclass(frozen=True)
class DueSeries:
    """A routed series whose completion condition holds, and which condition."""

    series: SeriesRow
    trigger: Trigger


@dataclass(frozen=True)
class JobRow:
    id: int
    series_uid: str
    generation: int
    rule_name: str
    models: tuple[str, ...]
    destinations: tuple[str, ...]
    args: Mapping[str, Any]  # free-form inference argument overrides
    trigger: Trigger
    state: JobState
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    outputs: tuple[JobOutput, ...]
    timings: Mapping[str, float]
    not_before: float | None
    forward: bool = False  # forwards the received instances (no models; done when created)
    # a study job: its input series in channel order (the first is series_uid); (): the series alone
    inputs: tuple[JobInput, ...] = ()


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    job_id: int
    series_uid: str
    destination: str
    path: str  # relative to storage_dir
    sop_instance_uid: str
    sop_class_uid: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    done_at: float | None


@dataclass(frozen=True)
class EventRow:
    id: int
    at: float
    level: str  # info | warning | error
    kind: str
    series_uid: str | None
    job_id: int | None
    message: str


class Recovered(NamedTuple):
    """What :meth:`Journal.recover` put back in the queue."""

    jobs: int
    deliveries: int


@dataclass(frozen=True)
class JournalCounts:
    """Row counts per state, for status displays and metrics."""

    series: Mapping[SeriesState, int]
    jobs: Mapping[JobState, int]
    deliveries: Mapping[DeliveryState, int]
    instances: int


# ---------------------------------------------------------------------- decoding (journal only)

Row = sqlite3.Row | Mapping[str, Any]


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def instance_row(r: Row) -> InstanceRow:
    return InstanceRow(
        sop_instance_uid=r["sop_instance_uid"],
        sop_class_uid=r["sop_class_uid"],
        series_uid=r["series_uid"],
        study_uid=r["study_uid"],
        transfer_syntax=r["transfer_syntax"],
        path=r["path"],
        size=int(r["size"]),
        called_ae=r["called_ae"],
        calling_ae=r["calling_ae"],
        association_id=r["association_id"],
        received_at=float(r["received_at"]),
        acquisition=r["acquisition"] or "",
        images_in_acquisition=_opt_int(r["images_in_acquisition"]),
        digest=r["digest"],
    )


def series_row(r: Row) -> SeriesRow:
    rules = r["rules"]
    return SeriesRow(
        series_uid=r["series_uid"],
        study_uid=r["study_uid"],
        modality=r["modality"],
        series_description=r["series_description"],
        called_ae=r["called_ae"],
        calling_ae=r["calling_ae"],
        first_received=float(r["first_received"]),
        last_received=float(r["last_received"]),
        instance_count=int(r["instance_count"]),
        expected_count=_opt_int(r["expected_count"]),
        generation=int(r["generation"]),
        state=SeriesState(r["state"]),
        rules=None if rules is None else tuple(str(n) for n in json.loads(rules)),
        quiet_seconds=_opt_float(r["quiet_seconds"]),
        complete_on_release=bool(r["complete_on_release"]),
        use_expected_count=bool(r["use_expected_count"]),
        last_association_id=r["last_association_id"],
        released=bool(r["released"]),
        routing_note=r["routing_note"],
        completions=int(r["completions"]),
        complete_study=bool(r["complete_study"]),
    )


def _outputs(text: str | None) -> tuple[JobOutput, ...]:
    items = json.loads(text) if text else []
    return tuple(
        JobOutput(
            path=str(o["path"]),
            kind=str(o.get("kind", "")),
            sop_instance_uid=o.get("sop_instance_uid"),
            sop_class_uid=o.get("sop_class_uid"),
        )
        for o in items
    )


def job_row(r: Row, **changes: Any) -> JobRow:
    """A job row; ``changes`` override columns (a claim's own update, without reading back)."""
    values = {k: r[k] for k in r.keys()}  # noqa: SIM118
    values.update(changes)
    timings = json.loads(values["timings"]) if values["timings"] else {}
    return JobRow(
        id=int(values["id"]),
        series_uid=values["series_uid"],
        generation=int(values["generation"]),
        rule_name=values["rule_name"],
        models=tuple(str(m) for m in json.loads(values["models"])),
        destinations=tuple(str(d) for d in json.loads(values["destinations"])),
        args=MappingProxyType(json.loads(values["args"] or "{}")),
        trigger=Trigger(values["trigger"]),
        state=JobState(values["state"]),
        attempts=int(values["attempts"]),
        created_at=float(values["created_at"]),
        started_at=_opt_float(values["started_at"]),
        finished_at=_opt_float(values["finished_at"]),
        error=values["error"],
        outputs=_outputs(values["outputs"]),
        timings=MappingProxyType({str(k): float(v) for k, v in timings.items()}),
        not_before=_opt_float(values["not_before"]),
        forward=bool(values["forward"]),
        inputs=decode_inputs(values.get("inputs")),
    )


def encode_inputs(inputs: Sequence[JobInput]) -> str | None:
    """The ``jobs.inputs`` column: canonical JSON (equal inputs, equal text), NULL for none."""
    return json.dumps([[i.series_uid, i.generation] for i in inputs]) if inputs else None


def decode_inputs(text: str | None) -> tuple[JobInput, ...]:
    return tuple(JobInput(str(uid), int(gen)) for uid, gen in json.loads(text)) if text else ()


def delivery_row(r: Row, **changes: Any) -> DeliveryRow:
    """A delivery row; ``changes`` override columns (a claim's own update, without reading back)."""
    values = {k: r[k] for k in r.keys()}  # noqa: SIM118
    values.update(changes)
    return DeliveryRow(
        id=int(values["id"]),
        job_id=int(values["job_id"]),
        series_uid=values["series_uid"],
        destination=values["destination"],
        path=values["path"],
        sop_instance_uid=values["sop_instance_uid"],
        sop_class_uid=values["sop_class_uid"],
        state=DeliveryState(values["state"]),
        attempts=int(values["attempts"]),
        next_attempt_at=float(values["next_attempt_at"]),
        last_status=_opt_int(values["last_status"]),
        last_error=values["last_error"],
        created_at=float(values["created_at"]),
        done_at=_opt_float(values["done_at"]),
    )


def event_row(r: Row) -> EventRow:
    return EventRow(
        id=int(r["id"]),
        at=float(r["at"]),
        level=r["level"],
        kind=r["kind"],
        series_uid=r["series_uid"],
        job_id=_opt_int(r["job_id"]),
        message=r["message"],
    )
