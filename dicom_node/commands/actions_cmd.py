"""``dicom-node retry JOB_ID``, ``resend DELIVERY_ID``, ``rerun SERIES_UID [--rule NAME]``: operator
actions on the journal of the node configured in ``--config`` (see :mod:`dicom_node.ops.actions`);
they work while the node runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicom_node.ops.actions import ActionError, ActionResult, rerun_series, resend_delivery, retry_job
from dicom_node.ops.node_journal import CommandExit, open_node_journal, report_exit


def register(subparsers: Any) -> None:
    retry = subparsers.add_parser(
        "retry", help="run a job again (trigger manual)", description="Queue a new job doing what JOB_ID did."
    )
    retry.add_argument("job_id", type=int, metavar="JOB_ID")
    resend = subparsers.add_parser(
        "resend",
        help="send a delivery again (trigger manual)",
        description="Queue the file of DELIVERY_ID again to its destination.",
    )
    resend.add_argument("delivery_id", type=int, metavar="DELIVERY_ID")
    rerun = subparsers.add_parser(
        "rerun",
        help="run the models of a series again (trigger manual)",
        description="Queue new jobs for SERIES_UID, one per rule that ran models on it (or --rule NAME).",
    )
    rerun.add_argument("series_uid", metavar="SERIES_UID")
    rerun.add_argument("--rule", metavar="NAME", help="only this rule")
    for parser in (retry, resend, rerun):
        parser.add_argument("--config", type=Path, required=True, metavar="PATH", help="node configuration")
    retry.set_defaults(func=lambda a: _act(a, lambda j: retry_job(j, a.job_id)))
    resend.set_defaults(func=lambda a: _act(a, lambda j: resend_delivery(j, a.delivery_id)))
    rerun.set_defaults(func=lambda a: _act(a, lambda j: rerun_series(j, a.series_uid, rule=a.rule)))


def _act(args: argparse.Namespace, action: Any) -> int:
    try:
        journal = open_node_journal(args.config, readonly=False)
    except CommandExit as exc:
        return report_exit(exc)
    try:
        result: ActionResult = action(journal)
    except ActionError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        journal.close()
    print(result.message)
    return 0
