"""``dicom-node``: the command-line entry point. Logging is configured only here and by ``serve``
(which applies the config's ``logging`` section), never by library modules; this module also makes
the process-wide settings once (:func:`dicom_node.process.configure_process`) before a command runs,
except for commands that say they need none (``send``, ``echo``: they import neither pydicom nor
pynetdicom, whose imports would be most of their time)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from dicom_node.logs import configure_logging

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
    "actions_cmd",
    "journal",
)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "INFO"


def version() -> str:
    import importlib.metadata  # only when asked: its import is a tenth of a ``send``'s start-up

    try:
        return importlib.metadata.version("nnunet-dicom-node")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """``--version``, looking the version up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"dicom-node {version()}")  # on stdout, as argparse's own version action
        parser.exit()


class _SubParsers(argparse._SubParsersAction):
    """Every subcommand also takes ``--log-level`` (``dicom-node serve --log-level DEBUG``)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        parser.add_argument(
            "--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS, help="log level on stderr"
        )
        return parser


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-node",
        description="DICOM node that segments received series with nnU-Net and sends DICOM SEG back.",
    )
    parser.register("action", "parsers", _SubParsers)
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "--log-level",
        default=None,
        choices=LOG_LEVELS,
        help=f"log level on stderr (default {DEFAULT_LOG_LEVEL}, or the config's logging.level for serve);"
        " also accepted after the command",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _modules_for(argv):
        importlib.import_module(f"dicom_node.commands.{name}").register(sub)
    return parser


def _modules_for(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The command modules to load for ``argv`` (all when None): only the named command's when it has
    a module of its own (``dicom-node send`` starts without importing the server, the journal or
    inference), else all (help, an unknown command, a module with several commands)."""
    if argv is None:
        return COMMAND_MODULES
    args = list(argv)
    while args and args[0].startswith("--log-level"):
        args = args[1 if "=" in args[0] else 2 :]
    if args and args[0] in COMMAND_MODULES:
        return (args[0],)
    if args and f"{args[0]}_cmd" in COMMAND_MODULES:
        return (f"{args[0]}_cmd",)
    return COMMAND_MODULES


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging(args.log_level or DEFAULT_LOG_LEVEL)
    if getattr(args, "process_settings", True):  # send and echo need none (and start faster without)
        from dicom_node.process import configure_process

        configure_process()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
