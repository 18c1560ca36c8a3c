"""Full-jitter exponential backoff: the cap doubles from ``initial`` up to ``maximum``, each delay is
uniform in [0, cap], and the randomness comes from the injected generator."""

from __future__ import annotations

import random

import pytest

from dicom_node.pipeline.backoff import Backoff


class Fixed(random.Random):
    """A generator whose random() is always ``value`` (uniform(a, b) = a + (b - a) * value)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_cap_doubles_then_stays_at_the_maximum() -> None:
    b = Backoff(1.5, 20.0)
    assert [b.cap(n) for n in range(1, 7)] == [1.5, 3.0, 6.0, 12.0, 20.0, 20.0]


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempts_below_one_count_as_the_first(attempt: int) -> None:
    assert Backoff(2.0, 60.0).cap(attempt) == 2.0


@pytest.mark.parametrize("attempt", [61, 62, 1_000, 10**9])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    assert Backoff(0.5, 3600.0).cap(attempt) == 3600.0


def test_initial_above_maximum_is_capped_from_the_start() -> None:
    b = Backoff(100.0, 30.0)
    assert [b.cap(n) for n in (1, 2, 10)] == [30.0, 30.0, 30.0]


@pytest.mark.parametrize(("value", "expected"), [(0.0, 0.0), (0.5, 4.0), (1.0, 8.0)])
def test_delay_spans_zero_to_the_cap(value: float, expected: float) -> None:
    assert Backoff(2.0, 30.0, Fixed(value)).delay(3) == expected  # cap(3) = 8


def test_delays_stay_within_bounds_and_spread() -> None:
    b = Backoff(1.0, 10.0, random.Random(7))
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0)]:
        delays = [b.delay(attempt) for _ in range(500)]
        assert all(0.0 <= d <= cap for d in delays), attempt
        assert min(delays) < 0.1 * cap and max(delays) > 0.9 * cap, attempt  # full jitter, not a constant
        assert 0.4 * cap < sum(delays) / len(delays) < 0.6 * cap, attempt


def test_same_seed_same_delays() -> None:
    a = Backoff(2.0, 30.0, random.Random(42))
    b = Backoff(2.0, 30.0, random.Random(42))
    assert [a.delay(n) for n in range(1, 10)] == [b.delay(n) for n in range(1, 10)]


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 5.0), (1.0, -5.0)])
def test_non_positive_settings_are_refused(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="positive initial and maximum"):
        Backoff(initial, maximum)
