"""Deterministic UIDs."""

from __future__ import annotations

import pytest

from inference.uids import derive_uid, is_valid_uid


def test_same_parts_same_uid_other_parts_other_uid() -> None:
    uid = derive_uid("1.2.3", "liver", "1.0+abc", "series")
    assert uid == derive_uid("1.2.3", "liver", "1.0+abc", "series")
    assert uid != derive_uid("1.2.3", "liver", "1.0+abd", "series")
    assert uid != derive_uid("1.2.3", "liver", "1.0+abc", "instance")


def test_parts_are_joined_unambiguously() -> None:
    assert derive_uid("ab", "c") != derive_uid("a", "bc")
    assert derive_uid("a.b") != derive_uid("a", "b")
    assert derive_uid("", "x") != derive_uid("x")


def test_uids_are_valid() -> None:
    for i in range(2000):
        uid = derive_uid(str(i), "model", "v")
        assert is_valid_uid(uid), uid
        assert len(uid) <= 64
        assert not any(len(c) > 1 and c.startswith("0") for c in uid.split("."))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        derive_uid()
    with pytest.raises(TypeError, match="must be str"):
        derive_uid("1.2", 3)  # type: ignore[arg-type]
