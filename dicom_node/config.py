"""Typed node configuration: the YAML contract of ``dicom-node serve --config PATH``.

Everything is validated when the file loads; regexes are compiled then, relative paths are resolved
against the config file's folder, and unknown keys are an error. The loaded object is immutable and is
passed explicitly to whatever needs it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicom_node.errors import ConfigError
from dicom_node.net.ae_titles import check_ae_title
from dicom_node.net.peers import is_valid_host
from dicom_node.net.tls import ClientTls, ServerTls, client_context, server_context
from inference.inflate_guard import DEFAULT_MAX_INFLATED_BYTES
from inference.strict_yaml import load_yaml

AETitle = Annotated[str, Field(min_length=1, max_length=16)]
IPNetwork = IPv4Network | IPv6Network  # an address is a network of one (10.0.0.5 = 10.0.0.5/32)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Strict):
    """Listening side of the node."""

    ae_title: list[AETitle] = Field(default_factory=lambda: ["NNUNET"])
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    storage_dir: Path = Path("./var")
    allowed_calling_aes: list[AETitle] = Field(default_factory=list)
    max_associations: int = Field(default=10, ge=1, le=1000)
    max_pending_connections: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="connections that have not sent their association request yet, in total; more are"
        " closed at once",
    )
    max_pending_per_peer: int = Field(default=4, ge=1, le=1000, description="the same, from one peer address")
    acse_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="a connection's association request must be complete this long after connecting",
    )
    dimse_timeout_seconds: float = Field(default=30.0, gt=0)
    network_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="idle associations are aborted after this; a PDU must be complete this long after"
        " its first byte",
    )
    max_dataset_bytes: int = Field(
        default=DEFAULT_MAX_INFLATED_BYTES,
        ge=1024 * 1024,
        le=4 * 1024**3,
        description="largest data set a C-STORE may carry (a larger one aborts the association as it"
        " arrives); also the most a deflated instance may inflate to (refused with 0xA700 at receive,"
        " rejected from the drop folder, refused by series loading)",
    )
    max_pdu_bytes: int = Field(
        default=1_048_576,
        ge=4096,
        le=64 * 1024 * 1024,
        description="maximum PDU length we announce; larger incoming PDUs abort the association",
    )
    min_free_disk_mb: int = Field(
        default=1024, ge=0, description="below this free space C-STORE answers 0xA700"
    )
    fsync: bool = Field(default=True, description="fsync each received file and its directory")
    calling_ae_hosts: dict[AETitle, list[IPNetwork]] = Field(
        default_factory=dict,
        description="a calling AE listed here is accepted only from these addresses or networks",
    )
    tls: ServerTls | None = Field(default=None, description="DICOM TLS on the listening port")
    calling_ae_quota_mb: dict[AETitle, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="calling AE -> MB of kept spool data it may fill; beyond it C-STORE answers 0xA700",
    )
    storage_permissions: Literal["owner", "group"] = Field(
        default="owner",
        description="who may read the spool, outputs and journal: owner (files 0600, folders 0700)"
        " or group (0640/0750)",
    )
    retention_days: float = Field(default=7.0, gt=0)

    @field_validator("ae_title", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("ae_title", "allowed_calling_aes")
    @classmethod
    def _valid_aes(cls, value: list[str]) -> list[str]:
        titles = [check_ae_title(v) for v in value]
        if len(set(titles)) != len(titles):
            raise ValueError("duplicate AE titles")
        return titles

    @field_validator("calling_ae_quota_mb")
    @classmethod
    def _quota_aes(cls, value: dict[str, float]) -> dict[str, float]:
        return {check_ae_title(ae): mb for ae, mb in value.items()}

    @field_validator("calling_ae_hosts")
    @classmethod
    def _hosts(cls, value: dict[str, list[IPNetwork]]) -> dict[str, list[IPNetwork]]:
        checked = {}
        for ae, networks in value.items():
            if not networks:
                raise ValueError(f"{ae}: at least one address or network")
            checked[check_ae_title(ae)] = networks
        return checked

    @field_validator("ae_title")
    @classmethod
    def _at_least_one(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one AE title is needed")
        return value

    @model_validator(mode="after")
    def _pending_limits(self) -> NodeSection:
        if self.max_pending_per_peer > self.max_pending_connections:
            raise ValueError("max_pending_per_peer cannot exceed max_pending_connections")
        return self


class DestinationConfig(_Strict):
    """A DICOM peer that receives our results."""

    ae_title: AETitle
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    calling_ae: AETitle | None = Field(
        default=None, description="our AE title towards this peer; default: the node's first"
    )
    timeout_seconds: float = Field(default=30.0, gt=0)
    tls: ClientTls | None = Field(default=None, description="DICOM TLS towards this peer")

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        if not is_valid_host(value):
            raise ValueError(f"invalid host {value!r}: a host name, an IPv4 address or [IPv6]")
        return value

    @field_validator("ae_title", "calling_ae")
    @classmethod
    def _valid_ae(cls, value: str | None) -> str | None:
        return None if value is None else check_ae_title(value)


class MatchConfig(_Strict):
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


class ChannelSelector(_Strict):
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


class RuleConfig(_Strict):
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


_RULES_ADAPTER: TypeAdapter[list[RuleConfig]] = TypeAdapter(list[RuleConfig])


class LocalExecutorConfig(_Strict):
    """Inference in the node's own process, on its own GPU or CPU (the default)."""

    kind: Literal["local"] = "local"


_RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.-]+:\d{1,5})$")


class RayExecutorConfig(_Strict):
    """Inference on predictor actors of a Ray cluster (docs/scale-out.md). Needs the optional
    dependency ``ray`` (``pip install '.[ray]'``); the model spec and model folders must be at the same
    path on every Ray worker."""

    kind: Literal["ray"]
    address: str = Field(default="auto", description="auto, host:port of the GCS, or ray://host:port")
    max_in_flight: int = Field(default=2, ge=1, le=256, description="jobs on the cluster at once")
    actors: int = Field(default=1, ge=1, le=1024, description="predictor actors (one per GPU)")
    num_cpus_per_actor: float = Field(default=1.0, ge=0, le=1024)
    num_gpus_per_actor: float = Field(default=0.0, ge=0, le=64, description="0: CPU actors")
    memory_mb_per_actor: int | None = Field(
        default=None, ge=1, description="host memory declared to Ray; default: the spec's largest min_mem"
    )
    max_actor_attempts: int = Field(
        default=3, ge=1, le=10, description="tries of a job when actors die under it"
    )
    data: Literal["object_store", "shared_path"] = Field(
        default="object_store",
        description="series and results through Ray's object store, or by path (storage_dir shared)",
    )
    connect_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    actor_start_timeout_seconds: float = Field(default=120.0, gt=0, le=86400)
    retry_delay_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="how long jobs wait before trying an unreachable cluster"
    )

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        if not _RAY_ADDRESS.match(value) or int(value.rpartition(":")[2] or 0) > 65535:
            raise ValueError(f"invalid Ray address {value!r}: auto, host:port or ray://host:port")
        return value

    @model_validator(mode="after")
    def _installed(self) -> RayExecutorConfig:
        if importlib.util.find_spec("ray") is None:
            raise ValueError("kind ray needs the optional dependency: pip install 'nnunet-dicom-node[ray]'")
        if self.address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise ValueError("ray:// addresses need Ray Client: pip install 'ray[client]'")
        return self


ExecutorConfig = Annotated[LocalExecutorConfig | RayExecutorConfig, Field(discriminator="kind")]


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


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d{1,2})$")


class InferenceSection(_Strict):
    device: str | list[str] = Field(
        default="auto",
        description="auto, cpu, cuda, cuda:N, or a list of cuda:N devices: one inference worker per device",
    )
    predictor_cache_size: int = Field(default=4, ge=1, le=64, description="warm predictors kept per device")
    workers: int = Field(default=1, ge=1, le=16, description="inference jobs run at once on each device")
    empty_result: Literal["empty_seg", "skip"] = Field(
        default="empty_seg",
        description="what to send when a model finds nothing: a SEG with empty segments, or nothing",
    )
    max_attempts: int = Field(default=2, ge=1, le=10)
    executor: ExecutorConfig = Field(default_factory=LocalExecutorConfig)

    @model_validator(mode="after")
    def _executor_device(self) -> InferenceSection:
        ex = self.executor
        if isinstance(ex, RayExecutorConfig):
            if self.device not in ("auto", "cuda", "cpu"):
                raise ValueError(
                    "with executor kind ray, Ray gives each actor its GPU: device is auto, cuda or cpu"
                )
            if self.device == "cuda" and ex.num_gpus_per_actor == 0:
                raise ValueError("device cuda with executor kind ray needs executor.num_gpus_per_actor > 0")
            if self.device == "cpu" and ex.num_gpus_per_actor > 0:
                raise ValueError("device cpu contradicts executor.num_gpus_per_actor > 0")
            if "workers" in self.model_fields_set:
                raise ValueError(
                    "workers is for kind local; with kind ray, executor.max_in_flight sets jobs run at once"
                )
        return self

    @field_validator("device")
    @classmethod
    def _v_device(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("device: name at least one device")
        for name in names:
            if not _DEVICE_RE.fullmatch(name.strip().lower()):
                raise ValueError(f"device {name!r}: use auto, cpu, cuda, cuda:N or a list of cuda:N")
        if isinstance(value, list):
            if any(n.strip().lower() in ("auto", "cpu", "cuda") for n in names) and len(names) > 1:
                raise ValueError("a device list names cuda:N devices only (auto, cpu, cuda stand alone)")
            normal = [n.strip().lower() for n in names]
            if len(set(normal)) != len(normal):
                raise ValueError(f"device list names a device twice: {value}")
        return value

    @property
    def devices(self) -> list[str]:
        """The devices, one inference worker (and predictor cache) each."""
        return [self.device] if isinstance(self.device, str) else list(self.device)


class SendingSection(_Strict):
    backoff_initial_seconds: float = Field(default=2.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    give_up_after_hours: float = Field(default=72.0, gt=0)


class OrthancSection(_Strict):
    """An Orthanc server that ``POST /infer_orthanc`` reads series from and stores SEGs back to."""

    url: str = Field(pattern=r"^https?://[^/\s]+(/.*)?$", description="e.g. http://orthanc:8042")
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> OrthancSection:
        if (self.username is None) != (self.password is None):
            raise ValueError("orthanc: give both username and password, or neither")
        return self


class HttpSection(_Strict):
    """The HTTP API, dashboard and metrics, served beside the SCP (no section: no HTTP server)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: str | None = Field(
        default=None,
        min_length=16,
        description="bearer token required by the endpoints that change something",
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_upload_mb: int = Field(default=2048, ge=1, le=65536, description="largest accepted upload")
    max_unpacked_mb: int = Field(
        default=8192, ge=1, le=262144, description="largest total size an upload may unpack to"
    )
    max_upload_files: int = Field(default=20000, ge=1, le=1_000_000)
    import_root: Path | None = Field(
        default=None, description="POST /infer reads series_folders only under this folder"
    )
    orthanc: OrthancSection | None = None
    job_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="how long /infer* waits for its job before answering 504"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("http: give both tls_cert and tls_key, or neither")
        return self


class LoggingSection(_Strict):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        default=None, description="default log level (the --log-level option wins)"
    )


class NodeConfig(_Strict):
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
            raise ConfigError(_format_validation_error(where, exc, data)) from exc
        return new.model_copy(update={"config_path": self.config_path, "rules_file": self.rules_file})


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """``rules.0.match`` -> ``rules[0] (ct-demo).match``: name the rule, not only its index."""
    parts = [str(p) for p in loc]
    rules: Any = None
    start = 0
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") if isinstance(data, dict) else None
        start = 1
    elif loc and isinstance(loc[0], int) and isinstance(data, list):
        rules, parts = data, ["rules", *parts]
    if rules is None or not isinstance(rules, list):
        return ".".join(parts) or "(top level)"
    index = int(loc[start])
    item = rules[index] if 0 <= index < len(rules) else None
    name = item.get("name") if isinstance(item, dict) else None
    head = f"rules[{index}]" + (f" ({name})" if isinstance(name, str) else "")
    rest = parts[2:]
    return head + ("." + ".".join(rest) if rest else "")


def _format_validation_error(source: Path | str, exc: ValidationError, data: Any = None) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        where = _where(tuple(err["loc"]), data)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def _resolve(base: Path, value: Path | None) -> Path | None:
    if value is None:
        return None
    value = value.expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def _resolved_http(http: HttpSection, base_dir: Path) -> HttpSection:
    """Relative paths of the http section against the config's folder; TLS files and the import root
    must exist now (not at the first request)."""
    update = {
        "tls_cert": _resolve(base_dir, http.tls_cert),
        "tls_key": _resolve(base_dir, http.tls_key),
        "import_root": _resolve(base_dir, http.import_root),
    }
    for key in ("tls_cert", "tls_key"):
        path = update[key]
        if path is not None and not path.is_file():
            raise ConfigError(f"http.{key}: {path} is not a file")
    root = update["import_root"]
    if root is not None and not root.is_dir():
        raise ConfigError(f"http.import_root: {root} is not a folder")
    return http.model_copy(update=update)


def load_rules_file(path: Path) -> list[RuleConfig]:
    """Load a rules-only YAML file (a list of rules, or a mapping with a ``rules`` key)."""
    data = _read_yaml(path)
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise ConfigError(f"{path}: a rules file holds a list of rules")
    try:
        return _RULES_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc, data)) from exc


def load_config(path: Path | str) -> NodeConfig:
    """Read, validate and resolve a node configuration file. Raises :class:`ConfigError`."""
    path = Path(path).resolve()
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_mapping(data, base_dir=path.parent, source=path)


SPEC_ENV = "MODEL_SERVE_SPEC"


def config_from_mapping(
    data: dict[str, Any],
    *,
    base_dir: Path,
    source: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Validate a configuration given as a mapping (relative paths against ``base_dir``). Without a
    ``model_spec`` key, ``$MODEL_SERVE_SPEC`` names the model spec (nnunet_serve's variable; a
    relative path is relative to the working directory)."""
    where: Path | str = source if source is not None else "<config>"
    from_env = (os.environ if environ is None else environ).get(SPEC_ENV)
    if "model_spec" not in data and from_env:
        data = {**data, "model_spec": str(Path(from_env).expanduser().resolve())}
    try:
        cfg = NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(where, exc, data)) from exc
    node = cfg.node.model_copy(
        update={
            "storage_dir": _resolve(base_dir, cfg.node.storage_dir),
            "tls": None if cfg.node.tls is None else cfg.node.tls.resolved(base_dir),
        }
    )
    destinations = {
        name: d if d.tls is None else d.model_copy(update={"tls": d.tls.resolved(base_dir)})
        for name, d in cfg.destinations.items()
    }
    try:  # certificates and keys are read now: a bad file is a configuration error
        if node.tls is not None:
            server_context(node.tls)
        for name, d in destinations.items():
            if d.tls is not None:
                client_context(d.tls, f"destinations.{name}")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    rules_file = _resolve(base_dir, cfg.rules_file)
    rules = cfg.rules
    if rules_file is not None:
        rules = load_rules_file(rules_file)
    update: dict[str, Any] = {
        "node": node,
        "destinations": destinations,
        "model_spec": _resolve(base_dir, cfg.model_spec),
        "rules_file": rules_file,
        "config_path": source,
    }
    if cfg.http is not None:
        update["http"] = _resolved_http(cfg.http, base_dir)
    cfg = cfg.model_copy(update=update)
    if rules_file is not None:
        cfg = cfg.with_rules(rules)
    return cfg
