"""The coded values the journal stores: the states of series, jobs and deliveries, the trigger that
completed a series. Strings at the SQLite boundary; these enums everywhere else."""

from __future__ import annotations

from enum import StrEnum


class SeriesState(StrEnum):
    RECEIVING = "receiving"  # instances arriving, completion not decided
    QUEUED = "queued"  # a job exists for the current generation
    UNMATCHED = "unmatched"  # no rule matched (kept for the retention period, never sent)
    ERROR = "error"  # routing or completion failed: the reason is the routing note


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    EMPTY = "empty"  # ran, found nothing (an empty SEG or no output, per ``empty_result``)
    FAILED = "failed"
    SUPERSEDED = "superseded"  # the series changed (new instances); a newer job delivers


#: Job states in which a job still has work ahead.
ACTIVE_JOB_STATES = (JobState.PENDING, JobState.RUNNING)
#: Job states a worker may close a job with.
FINISHED_JOB_STATES = (JobState.DONE, JobState.EMPTY, JobState.FAILED)


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer delivery of the same SOP instance to the same destination


#: Delivery states in which a delivery still has work ahead.
ACTIVE_DELIVERY_STATES = (DeliveryState.PENDING, DeliveryState.SENDING)


class Trigger(StrEnum):
    """Why a series was judged complete (a job's ``trigger``)."""

    EXPECTED_COUNT = "expected_count"  # all announced instances arrived
    ASSOCIATION_RELEASED = "association_released"  # rule option: the delivering association ended
    QUIET_PERIOD = "quiet_period"  # no new instance for the rule's quiet seconds
    MANUAL = "manual"  # an operator's retry or rerun
    HTTP = "http"  # an HTTP inference request (POST /infer*): its own job, no rule
