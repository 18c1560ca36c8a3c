"""The AE title rule, said once (PS3.5 6.2, VR AE): 1-16 characters of printable ASCII without
backslash, not only spaces; leading and trailing spaces are not significant and are removed. The
configuration, peers given as ``AE@HOST:PORT`` and the command line all check titles with
:func:`check_ae_title`."""

from __future__ import annotations

import argparse
import re

_AE_RE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")


def check_ae_title(value: object) -> str:
    """``value`` without its insignificant spaces; raises ValueError if it is not a valid AE title."""
    if not isinstance(value, str) or not _AE_RE.fullmatch(value) or not value.strip():
        raise ValueError(f"invalid AE title {value!r}: 1-16 printable ASCII characters, no backslash")
    return value.strip()


def ae_title_argument(text: str) -> str:
    """:func:`check_ae_title` for argparse (its error becomes the usage message)."""
    try:
        return check_ae_title(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
