"""Stage inputs of a cascade: a request series (its index, ``0`` the first) or an earlier model's
output: ``from:<model>`` (its label map), ``from:<model>=k`` (binary mask of label k),
``from:<model>[k]`` (its probability channel k). Torch- and numpy-free: argument validation uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inference.errors import PredictionError

_FROM = re.compile(r"from:(?P<model>[^=\[\]\s]+)(?:=(?P<label>\d+)|\[(?P<channel>\d+)\])?")


@dataclass(frozen=True)
class StageInput:
    """One input channel of a stage: a request series (``series``) or an earlier model's output."""

    series: int | None = None
    model: str | None = None
    label: int | None = None
    channel: int | None = None

    def __str__(self) -> str:
        if self.series is not None:
            return str(self.series)
        suffix = f"={self.label}" if self.label is not None else ""
        suffix += f"[{self.channel}]" if self.channel is not None else ""
        return f"from:{self.model}{suffix}"


def parse_stage_input(item: str | int) -> StageInput:
    """``0``/``"0"`` (request series index) or ``from:<model>``, ``from:<model>=k``,
    ``from:<model>[k]``."""
    if isinstance(item, bool):
        raise PredictionError(f"invalid stage input {item!r}")
    if isinstance(item, int):
        if item < 0:
            raise PredictionError(f"invalid stage input {item}: series indexes start at 0")
        return StageInput(series=item)
    text = item.strip()
    if text.isdigit():
        return StageInput(series=int(text))
    match = _FROM.fullmatch(text)
    if match is None:
        raise PredictionError(
            f"invalid stage input {item!r}: use a series index, from:<model>, from:<model>=k "
            "or from:<model>[k]"
        )
    label, channel = match["label"], match["channel"]
    return StageInput(
        model=match["model"],
        label=None if label is None else int(label),
        channel=None if channel is None else int(channel),
    )
