"""A clock the test sets by hand, for the services that take ``clock: Callable[[], float]``."""

from __future__ import annotations

from dataclasses import dataclass

T0 = 1_700_000_000.0  # a fixed "now" (2023-11-14), far from any real file time


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now
