"""What every configuration section shares: strict frozen models and the AE title type."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

AETitle = Annotated[str, Field(min_length=1, max_length=16)]


class Strict(BaseModel):
    """A configuration section: unknown keys are an error, and the loaded object is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
