"""The association server's accept loop: nothing in it stalls the associations it serves."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest

from tests.support.instances import echo
from tests.support.scp import running_node


def test_accepting_many_associations_forces_no_full_garbage_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom's server runs ``gc.collect()`` every 60 turns of its accept loop, which stops every
    association for as long as a full collection takes (~160 ms with torch loaded)."""
    collections: list[str] = []
    collect = gc.collect

    def counted(*args: int) -> int:
        collections.append(threading.current_thread().name)
        return collect(*args)

    monkeypatch.setattr(gc, "collect", counted)
    with running_node(tmp_path / "storage") as node:
        statuses = [echo(node.port) for _ in range(70)]  # more turns than pynetdicom's 60
    assert statuses == [0] * 70
    assert collections == []
