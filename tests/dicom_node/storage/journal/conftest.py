"""A fresh journal per test, in a folder that does not exist yet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dicom_node.storage.journal import Journal


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    j = Journal(tmp_path / "var" / "journal.sqlite")
    yield j
    j.close()
