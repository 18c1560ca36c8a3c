"""Reading the configuration: YAML files, the rules file, relative paths and TLS files checked at load."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from dicom_node.config.format_errors import format_validation_error
from dicom_node.config.http_section import HttpSection
from dicom_node.config.node_config import NodeConfig
from dicom_node.config.rules import RuleConfig
from dicom_node.errors import ConfigError
from dicom_node.net.tls import client_context, server_context
from inference.strict_yaml import load_yaml


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


_RULES_ADAPTER: TypeAdapter[list[RuleConfig]] = TypeAdapter(list[RuleConfig])


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
        raise ConfigError(format_validation_error(path, exc, data)) from exc


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
        raise ConfigError(format_validation_error(where, exc, data)) from exc
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
