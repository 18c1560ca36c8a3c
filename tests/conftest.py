"""Project-wide pytest fixtures."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> None:
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
