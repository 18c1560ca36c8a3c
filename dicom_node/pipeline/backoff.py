"""Jittered exponential backoff for delivery retries ("full jitter").

Attempt ``n`` (1 = the first failure) waits a uniformly random time in ``[0, cap_n]`` where
``cap_n = min(maximum, initial * 2 ** (n - 1))``. Random spreading keeps many results queued for one
destination from retrying in lock-step when it comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float
    maximum: float
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum <= 0:
            raise ValueError(
                f"backoff needs positive initial and maximum, got {self.initial}, {self.maximum}"
            )

    def cap(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 60)
        return min(self.maximum, self.initial * (2.0**exponent))

    def delay(self, attempt: int) -> float:
        """A random wait after failed attempt number ``attempt`` (1-based)."""
        return self.rng.uniform(0.0, self.cap(attempt))
