"""Project-wide pytest fixtures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.net.switches import stream_received_datasets
from dicom_node.storage.journal import Journal


@pytest.fixture(autouse=True, scope="session")
def _process_settings() -> None:
    """What the entry point and Node.start set once per process (dicom_node.process); set here
    without the stdout capture, which would sit in front of pytest's own."""
    stream_received_datasets()


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> None:
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """A fresh journal per test, in a folder that does not exist yet (``tmp_path/var``)."""
    j = Journal(tmp_path / "var" / "journal.sqlite")
    yield j
    j.close()
