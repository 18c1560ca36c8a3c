"""Typed node configuration: the YAML contract of ``dicom-node serve --config PATH``.

Everything is validated when the file loads; regexes are compiled then, relative paths are resolved
against the config file's folder, and unknown keys are an error. The loaded object is immutable and is
passed explicitly to whatever needs it. One module per section; this package re-exports the public names.
"""

from __future__ import annotations

from dicom_node.config.base import AETitle
from dicom_node.config.destinations import DestinationConfig, SendingSection
from dicom_node.config.http_section import HttpSection, OrthancSection
from dicom_node.config.inference_section import (
    ExecutorConfig,
    InferenceSection,
    LocalExecutorConfig,
    RayExecutorConfig,
)
from dicom_node.config.loading import SPEC_ENV, config_from_mapping, load_config, load_rules_file
from dicom_node.config.logging_section import LoggingSection
from dicom_node.config.node import IPNetwork, NodeSection
from dicom_node.config.node_config import NodeConfig
from dicom_node.config.rules import ChannelSelector, MatchConfig, RuleConfig, rule_problems

__all__ = [
    "SPEC_ENV",
    "AETitle",
    "ChannelSelector",
    "DestinationConfig",
    "ExecutorConfig",
    "HttpSection",
    "IPNetwork",
    "InferenceSection",
    "LocalExecutorConfig",
    "LoggingSection",
    "MatchConfig",
    "NodeConfig",
    "NodeSection",
    "OrthancSection",
    "RayExecutorConfig",
    "RuleConfig",
    "SendingSection",
    "config_from_mapping",
    "load_config",
    "load_rules_file",
    "rule_problems",
]
