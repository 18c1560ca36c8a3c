"""The one YAML loader of the project (node configuration, rules files, model-serve-spec.yaml): safe
(no Python objects) and refusing a key given twice in one mapping, which PyYAML would silently
resolve by keeping the last value. Here, in the engine package, so both ``inference`` and
``dicom_node`` can use it."""

from __future__ import annotations

from typing import Any

import yaml


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" merges; keys given here still override it, as YAML says
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable key: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse YAML text; raises :class:`yaml.YAMLError` (a duplicate key is one)."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no objects
