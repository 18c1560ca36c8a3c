"""Subcommands of ``dicom-node``. Each module exposes ``register(subparsers)`` which adds its parser
and sets ``func`` (``(argparse.Namespace) -> int``) as the parser default."""
