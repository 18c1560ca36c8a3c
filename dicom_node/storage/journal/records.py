"""Values passed to and returned by the journal, and row decoding."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InstanceRecord:
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
    sha256: str | None = None  # of the data set bytes (no file meta)


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
class RecordOutcome:
    """What :meth:`Journal.record_instance` did."""

    replaced: bool  # the SOP Instance UID was known already
    old_path: str | None  # the previous file, when it lay elsewhere (caller deletes it)
    late: bool  # the series already had a job for an earlier generation
    unchanged: bool = False  # the same SOP instance with byte-identical content: no new generation


def row_to_dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return None if row is None else {k: row[k] for k in row.keys()}  # noqa: SIM118


def decode_job(job: dict[str, Any]) -> dict[str, Any]:
    for key in ("models", "destinations", "args", "outputs", "timings"):
        if isinstance(job.get(key), str):
            job[key] = json.loads(job[key])
    return job


def decode_series(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("rules"), str):
        row["rules"] = json.loads(row["rules"])
    return row
