"""Routing rules as data: match conditions, input channels, and the one check of a rules list."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicom_node.config.base import Strict


class MatchConfig(Strict):
    """Conditions of a rule. Every given field must match. Strings are Python regexes matched with
    ``re.fullmatch`` against the raw attribute value (case-sensitive unless the pattern says
    ``(?i)``). A missing attribute is matched as the empty string."""

    called_ae: str | None = None
    calling_ae: str | None = None
    modality: str | None = None
    series_description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    _compiled: dict[str, re.Pattern[str]] = PrivateAttr(default_factory=dict)

    @field_validator("called_ae", "calling_ae", "modality", "series_description", mode="before")
    @classmethod
    def _int_as_text(cls, value: Any) -> Any:
        # YAML reads ``SeriesNumber: 3`` as an int; the pattern is its decimal text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("tags", mode="before")
    @classmethod
    def _int_tags_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: cls._int_as_text(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _compile(self) -> MatchConfig:
        compiled: dict[str, re.Pattern[str]] = {}
        fields = {
            "called_ae": self.called_ae,
            "calling_ae": self.calling_ae,
            "modality": self.modality,
            "series_description": self.series_description,
        }
        for name, pattern in fields.items():
            if pattern is not None:
                compiled[name] = _compile_regex(name, pattern)
        for keyword, pattern in self.tags.items():
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"tags: {keyword!r} is not a DICOM keyword")
            if dictionary_VR(tag) == "SQ":
                raise ValueError(f"tags: {keyword!r} is a sequence; only plain attributes can be matched")
            compiled[f"tags.{keyword}"] = _compile_regex(f"tags.{keyword}", pattern)
        self._compiled = compiled
        return self

    def patterns(self) -> dict[str, re.Pattern[str]]:
        """Compiled patterns keyed by field name (``tags.Keyword`` for tags)."""
        return dict(self._compiled)


def _compile_regex(field: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{field}: invalid regex {pattern!r}: {exc}") from exc


class ChannelSelector(Strict):
    """Which series of a study feeds one input channel of a rule's model: regexes (``re.fullmatch``,
    like ``match``) on SeriesDescription and/or one attribute (``tag`` keyword + ``regex``); every
    given condition must hold."""

    series_description: str | None = None
    tag: str | None = None
    regex: str | None = None

    _compiled: dict[str, re.Pattern[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _compile(self) -> ChannelSelector:
        if (self.tag is None) != (self.regex is None):
            raise ValueError("a channel's tag and regex go together")
        if self.series_description is None and self.tag is None:
            raise ValueError("a channel needs series_description or tag + regex")
        compiled: dict[str, re.Pattern[str]] = {}
        if self.series_description is not None:
            compiled["SeriesDescription"] = _compile_regex("series_description", self.series_description)
        if self.tag is not None and self.regex is not None:
            tag = tag_for_keyword(self.tag)
            if tag is None or dictionary_VR(tag) == "SQ":
                raise ValueError(f"tag {self.tag!r} is not a DICOM keyword of a plain attribute")
            compiled[self.tag] = _compile_regex(f"tag {self.tag}", self.regex)
        self._compiled = compiled
        return self

    def patterns(self) -> dict[str, re.Pattern[str]]:
        """Compiled patterns by DICOM keyword."""
        return dict(self._compiled)

    def describe(self) -> str:
        return ", ".join(f"{k} {p.pattern!r}" for k, p in self._compiled.items())


class RuleConfig(Strict):
    """One routing rule; rules are tried in order and the first match wins unless it says
    ``continue: true``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    enabled: bool = True
    match: MatchConfig = Field(default_factory=MatchConfig)
    models: list[str] = Field(
        default_factory=list, description="models run on the series (a cascade if several)"
    )
    forward: bool = Field(
        default=False,
        description="send the received instances themselves to the destinations, as received",
    )
    forward_when: Literal["received", "complete"] = Field(
        default="complete",
        description="forward each instance once filed, or the series once complete",
    )
    complete: Literal["series", "study"] = Field(
        default="series",
        description="run when the series is complete, or when its whole study is quiet",
    )
    destinations: list[str] = Field(default_factory=list)
    series_quiet_seconds: float = Field(default=10.0, ge=0, le=86400)
    complete_on_release: bool = Field(
        default=False, description="also complete when the delivering association is released"
    )
    use_expected_count: bool = Field(
        default=True,
        description="complete at once when ImagesInAcquisition (0020,1002) instances have arrived",
    )
    continue_: bool = Field(default=False, alias="continue")
    channels: list[ChannelSelector] | None = Field(
        default=None,
        min_length=1,
        description="multi-series input: the series of one study feeding each model input channel, "
        "in channel order; implies complete: study (one job per study, made when the study is quiet)",
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="inference argument overrides (model spec default_args)"
    )

    @field_validator("models", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _channels_complete_the_study(cls, data: Any) -> Any:
        """``channels`` take several series of one study: the rule completes on the study
        (``complete: study`` implied; ``complete: series`` refused)."""
        if isinstance(data, dict) and data.get("channels"):
            if data.get("complete", "study") != "study":
                raise ValueError(
                    "'channels' take several series of one study: the rule completes on the study;"
                    f" remove 'complete: {data['complete']}' or set 'complete: study'"
                )
            data = {**data, "complete": "study"}
        return data

    @model_validator(mode="after")
    def _does_something(self) -> RuleConfig:
        if not self.models and not self.forward:
            raise ValueError("a rule needs 'models', 'forward: true', or both")
        if self.forward and not self.destinations:
            raise ValueError("'forward: true' needs 'destinations'")
        if self.forward_when == "received" and not self.forward:
            raise ValueError("'forward_when' needs 'forward: true'")
        return self


def rule_problems(
    rules: Sequence[RuleConfig],
    *,
    destinations: Mapping[str, Any] | None = None,
    resolve_model: Callable[[str], object] | None = None,
) -> list[str]:
    """What is wrong with a list of rules as a whole, one line per problem, each naming its rule:
    a name used twice, a destination not among ``destinations`` (when given), a model that
    ``resolve_model`` (the model spec's resolver, when given) refuses. The one rules check: the
    configuration runs it at load (without the model spec), :meth:`RuleSet.build
    <dicom_node.pipeline.routing.RuleSet.build>` with the model spec."""
    problems: list[str] = []
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            problems.append(f"rule {rule.name!r}: duplicate rule name")
        seen.add(rule.name)
        if destinations is not None:
            known = ", ".join(sorted(destinations)) or "none"
            for dest in rule.destinations:
                if dest not in destinations:
                    problems.append(f"rule {rule.name!r}: unknown destination {dest!r} (configured: {known})")
        if resolve_model is not None:
            for model in rule.models:
                try:
                    resolve_model(model)
                except Exception as exc:  # the catalog's own error type; reported, not swallowed
                    problems.append(f"rule {rule.name!r}: model {model!r} not in the model spec: {exc}")
    return problems
