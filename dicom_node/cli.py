"""``dicom-node``: the command-line entry point. Only this module configures logging; it also makes
the process-wide settings once (:func:`dicom_node.process.configure_process`) before a command runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from dicom_node.process import configure_process

logger = logging.getLogger(__name__)

# Subcommand modules under dicom_node.commands, each with register(subparsers).
COMMAND_MODULES = (
    "serve",
    "demo",
    "predict",
    "echo",
    "send",
    "status",
    "config_cmd",
    "rules",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-node",
        description="DICOM node that segments received series with nnU-Net and sends DICOM SEG back.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"dicom_node.commands.{name}").register(sub)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # libraries that log routine steps at INFO (highdicom: one line per copied module)
    for noisy in ("pynetdicom", "PIL", "matplotlib", "watchdog", "highdicom", "nnunetv2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    configure_process()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
