"""Atomic, durable writes: a failed write leaves the old file and no temp file behind; a finished one
replaces the file whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.atomic import atomic_path, atomic_write, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out" / "result.dcm"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_write(target) as stream:
        stream.write(b"half of the new")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.dcm"]


def test_a_finished_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "labels.nii.gz"  # folders are made
    with atomic_path(target, suffix=".nii.gz") as temp:
        assert temp.parent == target.parent and temp.name.endswith(".nii.gz") and not target.exists()
        temp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert sorted(p.name for p in target.parent.iterdir()) == ["labels.nii.gz"]
