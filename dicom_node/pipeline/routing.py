"""Routing: which rules a series matches, and why the others do not.

Rules are data (:class:`dicom_node.config.RuleConfig`), never evaluated code. Matching semantics:

- rules are tried in order; a disabled rule is skipped;
- every condition a rule gives must hold; a condition holds when its regex (compiled when the config
  loaded) matches the **whole** value (``re.fullmatch``), case-sensitively unless the pattern says
  ``(?i)``;
- the value is the attribute's raw text: as stored, multi-valued attributes joined with ``\\``, a
  missing or empty attribute is the empty string;
- the first matching rule wins; when it says ``continue: true`` the following rules are tried as well;
- a rule that only runs models (no ``forward``) never matches a series holding no image a model can
  take (vendor objects of private SOP classes, SR, SEG...): such series are kept, not processed.

:func:`route` returns the matched rules plus an explanation per rule, used by the node's log, the journal's
routing note and ``dicom-node rules explain``. :func:`routing_settings`, :func:`job_specs` and
:func:`model_spec` turn the matched rules into what :class:`dicom_node.storage.journal.Journal` stores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from dicom_node.config import NodeConfig, RuleConfig, rule_problems
from dicom_node.errors import ConfigError
from dicom_node.net.contexts import is_image_storage
from dicom_node.storage.journal import JobSpec

logger = logging.getLogger(__name__)

FIELDS = ("called_ae", "calling_ae", "modality", "series_description")


class ModelResolver(Protocol):
    """What :class:`RuleSet` needs of a model catalog (``inference.spec.ModelCatalog``):
    ``resolve`` returns the model for an id or alias and raises for an unknown name."""

    def resolve(self, name: str) -> Any: ...


def dicom_text(value: Any) -> str:
    """The raw text of an element value: multi-valued joined with ``\\``, ``None`` as ``""``."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(dicom_text(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1").rstrip("\x00 ")
    return str(value)


@dataclass(frozen=True)
class SeriesFacts:
    """What routing looks at for one series: the AEs of the association that delivered it and the
    header of one of its instances (pixel data not needed)."""

    called_ae: str
    calling_ae: str
    modality: str = ""
    series_description: str = ""
    header: Dataset | None = field(default=None, compare=False, repr=False)
    sop_classes: tuple[str, ...] = ()  # the SOP classes of the series' instances

    @classmethod
    def from_dataset(
        cls,
        header: Dataset,
        *,
        called_ae: str,
        calling_ae: str,
        sop_classes: Sequence[str] | None = None,
    ) -> SeriesFacts:
        """Facts from one instance's header; ``sop_classes`` of the whole series when known (else
        the header's own)."""
        if sop_classes is None:
            own = dicom_text(header.get("SOPClassUID"))
            sop_classes = [own] if own else []
        return cls(
            called_ae=called_ae,
            calling_ae=calling_ae,
            modality=dicom_text(header.get("Modality")),
            series_description=dicom_text(header.get("SeriesDescription")),
            header=header,
            sop_classes=tuple(sorted(set(sop_classes))),
        )

    @property
    def has_images(self) -> bool:
        """Some instance is an image a model may take (see :func:`is_image_storage`)."""
        return any(is_image_storage(c) for c in self.sop_classes)

    def tag(self, keyword: str) -> str:
        """Raw text of the attribute ``keyword`` in the header; ``""`` when absent."""
        if self.header is None or keyword not in self.header:
            return ""
        return dicom_text(self.header[keyword].value)

    def value(self, field_name: str) -> str:
        """The value a condition named ``field_name`` (``modality``, ``tags.BodyPartExamined``...)
        is matched against."""
        if field_name.startswith("tags."):
            return self.tag(field_name[len("tags.") :])
        if field_name in FIELDS:
            return str(getattr(self, field_name))
        raise KeyError(f"unknown routing field {field_name!r}")


@dataclass(frozen=True)
class ConditionFailure:
    """One condition of a rule that did not hold."""

    field: str
    pattern: str
    actual: str

    def describe(self) -> str:
        if self.field == "sop_class":
            return f"no image a model can take in the series (SOP classes: {self.actual})"
        return f"{self.field}: {self.actual!r} does not fully match {self.pattern!r}"


@dataclass(frozen=True)
class RuleExplanation:
    """The outcome of one rule for one series.

    ``matched``: the rule applies (it is in :attr:`RoutingDecision.matched`). ``conditions_met``: all
    its conditions hold (true also for a rule an earlier match shadowed). ``failures``: the conditions
    that do not hold. ``shadowed_by``: the earlier rule (without ``continue``) that stopped the search.
    """

    rule: str
    enabled: bool
    matched: bool
    conditions_met: bool
    failures: tuple[ConditionFailure, ...] = ()
    shadowed_by: str | None = None

    def describe(self) -> str:
        if self.matched:
            return "matches"
        if not self.enabled:
            return "disabled"
        if self.shadowed_by is not None and self.conditions_met:
            return f"would match, but rule {self.shadowed_by!r} matched first (without continue)"
        text = "; ".join(f.describe() for f in self.failures)
        if self.shadowed_by is not None:
            return f"not tried after rule {self.shadowed_by!r}; would not match: {text}"
        return f"no match: {text}"


@dataclass(frozen=True)
class RoutingDecision:
    matched: list[RuleConfig]
    explanations: list[RuleExplanation]

    @property
    def rule_names(self) -> list[str]:
        return [r.name for r in self.matched]

    def note(self) -> str:
        """One line for the journal and the log."""
        if self.matched:
            return "matched " + ", ".join(self.rule_names)
        if not self.explanations:
            return "no rules configured"
        parts = [f"{e.rule}: {e.describe()}" for e in self.explanations]
        return "no rule matches (" + " | ".join(parts) + ")"


def check_rule(rule: RuleConfig, facts: SeriesFacts) -> tuple[ConditionFailure, ...]:
    """The conditions of ``rule`` that ``facts`` fail (empty: the rule's conditions hold)."""
    failures = []
    for name, pattern in rule.match.patterns().items():
        actual = facts.value(name)
        if pattern.fullmatch(actual) is None:
            failures.append(ConditionFailure(name, pattern.pattern, actual))
    if rule.models and not rule.forward and facts.sop_classes and not facts.has_images:
        classes = ", ".join(UID(c).name or c for c in facts.sop_classes)
        failures.append(ConditionFailure("sop_class", "an image storage class (models need images)", classes))
    if rule.channels and channel_of(rule, facts) is None:
        wanted = " | ".join(c.describe() for c in rule.channels)
        failures.append(ConditionFailure("channels", wanted, facts.series_description))
    return tuple(failures)


def channel_of(rule: RuleConfig, facts: SeriesFacts) -> int | None:
    """The first of ``rule.channels`` the series fits (None: none, or the rule has no channels)."""
    for index, selector in enumerate(rule.channels or []):
        if all(p.fullmatch(facts.tag(keyword)) for keyword, p in selector.patterns().items()):
            return index
    return None


def route(facts: SeriesFacts, rules: Sequence[RuleConfig] | RuleSet) -> RoutingDecision:
    """Match ``facts`` against ``rules`` in order (see the module docstring). Every rule is
    explained, including those after the match that ended the search."""
    matched: list[RuleConfig] = []
    explanations: list[RuleExplanation] = []
    stopped_by: str | None = None
    for rule in rules:
        if not rule.enabled:
            explanations.append(RuleExplanation(rule.name, False, False, False, shadowed_by=stopped_by))
            continue
        failures = check_rule(rule, facts)
        ok = not failures
        applies = ok and stopped_by is None
        explanations.append(RuleExplanation(rule.name, True, applies, ok, failures, stopped_by))
        if applies:
            matched.append(rule)
            if not rule.continue_:
                stopped_by = rule.name
    return RoutingDecision(matched, explanations)


@dataclass(frozen=True)
class RoutingSettings:
    """Completion settings of a series, combined from its matched rules; what
    :meth:`dicom_node.storage.journal.Journal.set_routing` stores."""

    rules: tuple[str, ...]
    quiet_seconds: float
    complete_on_release: bool
    use_expected_count: bool
    note: str
    complete_study: bool = False


def routing_settings(decision: RoutingDecision) -> RoutingSettings:
    """One completion policy for a series matched by several rules: the longest quiet period;
    complete on release if any rule asks for it; trust the expected instance count only if every
    matched rule does (a rule that turned it off says the sender's count is unreliable). A rule
    with ``complete: study`` makes the series wait for its whole study to be quiet (the quiet
    period only: a series' own count or release says nothing of the study's other series)."""
    rules = decision.matched
    study = any(r.complete == "study" for r in rules)
    return RoutingSettings(
        rules=tuple(r.name for r in rules),
        quiet_seconds=max((r.series_quiet_seconds for r in rules), default=0.0),
        complete_on_release=not study and any(r.complete_on_release for r in rules),
        use_expected_count=not study and bool(rules) and all(r.use_expected_count for r in rules),
        note=decision.note(),
        complete_study=study,
    )


def job_specs(rules: Sequence[RuleConfig]) -> list[JobSpec]:
    """The journal jobs of a completed series: per matched rule, one forwarding the instances
    (``forward: true`` with ``forward_when: complete``) and one running its models (when it has any
    and no ``channels``: a rule with channels runs once per study, see :func:`model_spec`)."""
    specs = []
    for r in rules:
        if r.forward and r.forward_when == "complete":
            specs.append(forward_spec(r))
        if r.models and not r.channels:
            specs.append(model_spec(r))
    return specs


def model_spec(rule: RuleConfig) -> JobSpec:
    """The job running a rule's models (on a series, or on a study's channel series)."""
    return JobSpec(
        rule_name=rule.name,
        models=list(rule.models),
        destinations=list(rule.destinations),
        args=dict(rule.args),
    )


def forward_spec(rule: RuleConfig) -> JobSpec:
    """The forwarding job of a rule: its destinations, no models."""
    return JobSpec(
        rule_name=rule.name, models=[], destinations=list(rule.destinations), args={}, forward=True
    )


def _resolves(catalog: ModelResolver, name: str) -> bool:
    try:
        catalog.resolve(name)
    except Exception:  # the catalog's own error type; rule_problems reports it
        return False
    return True


def rule_args_problems(rule: RuleConfig, catalog: ModelResolver) -> list[str]:
    """What is wrong with a rule's inference arguments for the models it names, one line per
    argument at fault (see :mod:`inference.request_check`). Needs a real model catalog; a stand-in
    resolver (tests of routing alone) checks nothing here."""
    from inference.request_check import request_problems
    from inference.spec import ModelCatalog

    if not isinstance(catalog, ModelCatalog):
        return []
    n_series = len(rule.channels) if rule.channels else 1
    return [p.describe() for p in request_problems(catalog, rule.models, rule.args, n_series=n_series)]


@dataclass(frozen=True)
class RuleSet:
    """An immutable, validated, ordered set of rules. Build it with :meth:`build` or
    :meth:`from_config`; a reload makes a new one."""

    rules: tuple[RuleConfig, ...] = ()

    @classmethod
    def build(
        cls,
        rules: Sequence[RuleConfig],
        *,
        catalog: ModelResolver | None = None,
        destinations: Mapping[str, Any] | None = None,
    ) -> RuleSet:
        """Validate ``rules``: unique names, destinations among ``destinations`` (when given), every
        model id/alias resolvable by ``catalog`` (when given) and the rule's ``args`` valid for those
        models (:func:`rule_args_problems`). Raises :class:`ConfigError` listing
        every problem, one per line, each naming the rule."""
        problems = rule_problems(
            rules, destinations=destinations, resolve_model=None if catalog is None else catalog.resolve
        )
        if catalog is not None:  # the inference arguments of rules whose models all resolve
            for rule in rules:
                if rule.models and all(_resolves(catalog, m) for m in rule.models):  # none: forwarding only
                    problems.extend(f"rule {rule.name!r}: {p}" for p in rule_args_problems(rule, catalog))
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(tuple(rules))

    @classmethod
    def from_config(cls, config: NodeConfig, catalog: ModelResolver | None = None) -> RuleSet:
        return cls.build(config.rules, catalog=catalog, destinations=config.destinations)

    def __iter__(self) -> Iterator[RuleConfig]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    def model_names(self) -> list[str]:
        """Model ids/aliases the rules use, in first-use order."""
        return list(dict.fromkeys(m for r in self.rules for m in r.models))

    def route(self, facts: SeriesFacts) -> RoutingDecision:
        return route(facts, self)
