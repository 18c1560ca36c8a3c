"""The logging section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dicom_node.config.base import Strict


class LoggingSection(Strict):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        default=None, description="default log level (the --log-level option wins)"
    )
