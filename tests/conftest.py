"""Project-wide pytest fixtures."""

from __future__ import annotations

import logging

import pytest

from dicom_node.net.scu import use_raw_file_sending


@pytest.fixture(autouse=True, scope="session")
def _process_settings() -> None:
    """What the entry point and Node.start set once per process (dicom_node.process); set here
    without the stdout capture, which would sit in front of pytest's own."""
    use_raw_file_sending()


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> None:
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
