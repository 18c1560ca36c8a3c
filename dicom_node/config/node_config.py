"""The whole node configuration, checked across its sections."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from dicom_node.config.base import Strict
from dicom_node.config.destinations import DestinationConfig, SendingSection
from dicom_node.config.format_errors import format_validation_error
from dicom_node.config.http_section import HttpSection
from dicom_node.config.inference_section import InferenceSection
from dicom_node.config.logging_section import LoggingSection
from dicom_node.config.node import NodeSection
from dicom_node.config.rules import RuleConfig, rule_problems
from dicom_node.errors import ConfigError


class NodeConfig(Strict):
    """The whole node configuration."""

    node: NodeSection = Field(default_factory=NodeSection)
    model_spec: Path | None = None
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)
    rules_file: Path | None = Field(
        default=None, description="a YAML file holding the rules list instead of inline rules"
    )
    inference: InferenceSection = Field(default_factory=InferenceSection)
    sending: SendingSection = Field(default_factory=SendingSection)
    http: HttpSection | None = None
    logging: LoggingSection = Field(default_factory=LoggingSection)

    config_path: Path | None = Field(
        default=None, exclude=True, description="set by load_config: the file this came from"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_config_path_key(cls, data: Any) -> Any:
        # config_path is filled in by the loader, never read from the file.
        if isinstance(data, dict) and "config_path" in data:
            raise ValueError("config_path: unknown key")
        return data

    @model_validator(mode="after")
    def _cross_check(self) -> NodeConfig:
        if self.rules and self.rules_file is not None:
            raise ValueError("give either 'rules' or 'rules_file', not both")
        problems = rule_problems(self.rules, destinations=self.destinations)
        if problems:
            raise ValueError("\n".join(problems))
        if any(r.models for r in self.rules) and self.model_spec is None:
            raise ValueError("rules with models need 'model_spec' (the model-serve-spec.yaml file)")
        return self

    @property
    def watched_rules_path(self) -> Path | None:
        """The file whose changes reload the rules."""
        return self.rules_file or self.config_path

    def with_rules(self, rules: Sequence[RuleConfig]) -> NodeConfig:
        """A copy with other rules, validated like a fresh load (destinations known, names unique,
        a model spec present). Raises :class:`ConfigError`."""
        data = self.model_dump(by_alias=True)
        data["rules"] = [r.model_dump(by_alias=True) for r in rules]
        data["rules_file"] = None
        try:
            new = NodeConfig.model_validate(data)
        except ValidationError as exc:
            where = self.rules_file or self.config_path or "<rules>"
            raise ConfigError(format_validation_error(where, exc, data)) from exc
        return new.model_copy(update={"config_path": self.config_path, "rules_file": self.rules_file})
