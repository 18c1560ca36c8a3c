"""``dicom-node demo [--workdir DIR] [--keep]``: run the whole path once on this machine (see
:mod:`dicom_node.demo.demo`). Exit 0 when a valid SEG came back, 1 with a one-line reason otherwise."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from dicom_node.demo.bundled import demo_model_spec
from dicom_node.demo.demo import DemoOptions, run_demo
from dicom_node.errors import NodeError

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the node on a synthetic phantom CT, end to end, and print a summary",
        description=(
            "Start the node in-process with the bundled demo model, send it a synthetic phantom CT "
            "over DICOM, receive the SEG at a built-in receiver, validate it, and write a PNG overlay."
        ),
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo-output"),
        help="work folder (default ./demo-output); the demo's earlier files there are replaced",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the earlier run's node storage and journal: the same series is sent again and "
        "the same SEG (same UIDs) comes back",
    )
    parser.add_argument(
        "--model-spec",
        type=Path,
        default=None,
        help="model-serve-spec.yaml (default: the one shipped with the demo model)",
    )
    parser.add_argument("--model", default="demo", help="model id or alias in the spec (default demo)")
    parser.add_argument("--seed", type=int, default=DemoOptions.seed, help="phantom seed")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--quiet-seconds", type=float, default=1.0, help="the rule's quiet period (default 1 s)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the SEG")
    parser.add_argument("--no-dciodvfy", action="store_true", help="skip the dciodvfy validation")
    parser.add_argument(
        "--verbose", action="store_true", help="show the node's log (default: warnings and errors only)"
    )
    parser.set_defaults(func=run)


def _progress(message: str) -> None:
    sys.stdout.write(f"... {message}\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    options = DemoOptions(
        workdir=args.workdir,
        keep=args.keep,
        model_spec=args.model_spec or demo_model_spec(),
        model=args.model,
        seed=args.seed,
        device=args.device,
        quiet_seconds=args.quiet_seconds,
        timeout_seconds=args.timeout,
        validate=not args.no_dciodvfy,
    )
    try:
        report = run_demo(options, progress=_progress)
    except NodeError as exc:
        sys.stderr.write(f"dicom-node demo failed: {exc}\n")
        return 1
    except Exception as exc:  # any other failure still ends with one line, not a traceback
        logger.debug("demo failed", exc_info=True)
        sys.stderr.write(f"dicom-node demo failed: {type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(report.format() + "\n")
    if not report.ok:
        sys.stderr.write(f"dicom-node demo failed: {report.problems[0]}\n")
        return 1
    return 0
