"""The journal's public API hands out typed rows: no ``dict[str, Any]`` (or ``Mapping[str, Any]``,
or ``Any``) in any public method's parameters or return value, nor in the fields of the rows they
carry; every ``state`` is an enum. Free-form model arguments (``args``) are the one exception."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple

from dicom_node.storage.journal import Journal

FREE_FORM = frozenset({"args"})  # model arguments: a mapping by design


def untyped(tp: Any, where: str, seen: set[Any]) -> list[str]:
    """Places in annotation ``tp`` that are untyped (Any, or a mapping of str to Any)."""
    if tp is Any:
        return [where]
    origin, params = typing.get_origin(tp), typing.get_args(tp)
    if origin in (dict, Mapping) and (not params or params[1] is Any):
        return [where]
    if tp in (dict, Mapping):
        return [where]
    found: list[str] = []
    for i, param in enumerate(params):
        if param is not Ellipsis:
            found += untyped(param, f"{where}[{i}]", seen)
    is_record = dataclasses.is_dataclass(tp) or (isinstance(tp, type) and issubclass(tp, tuple))
    if isinstance(tp, type) and is_record and tp not in seen:
        seen.add(tp)
        for name, field_tp in typing.get_type_hints(tp).items():
            if name in FREE_FORM:
                continue
            found += untyped(field_tp, f"{where}.{tp.__name__}.{name}", seen)
            if name == "state":
                found += untyped_state(field_tp, f"{where}.{tp.__name__}.state")
    return found


def untyped_state(tp: Any, where: str) -> list[str]:
    """A ``state`` must be an enum (optionally None), not a bare string."""
    options = [t for t in typing.get_args(tp) if t is not type(None)] if _is_union(tp) else [tp]
    return [] if all(isinstance(t, type) and issubclass(t, enum.Enum) for t in options) else [where]


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def api_problems(cls: type) -> list[str]:
    seen: set[Any] = set()
    problems: list[str] = []
    for name, method in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("_"):
            continue
        for param, tp in typing.get_type_hints(method).items():
            if param in FREE_FORM:
                continue
            problems += untyped(tp, f"{name}({param})", seen)
            if param == "state":
                problems += untyped_state(tp, f"{name}(state)")
    return problems


def test_public_journal_methods_take_and_return_typed_rows() -> None:
    assert api_problems(Journal) == []


class _Row(NamedTuple):
    state: str
    extra: Mapping[str, Any]
    args: Mapping[str, Any]  # free-form: allowed


class _Loose:
    def rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def one(self, state: str | None = None) -> _Row | None:
        raise NotImplementedError

    def fine(self, args: Mapping[str, Any], n: int) -> tuple[int, ...]:
        raise NotImplementedError


def test_the_check_catches_dict_rows_bare_states_and_rows_with_dict_fields() -> None:
    assert sorted(api_problems(_Loose)) == [
        "one(return)[0]._Row.extra",
        "one(return)[0]._Row.state",
        "one(state)",
        "rows(return)[0]",
    ]
