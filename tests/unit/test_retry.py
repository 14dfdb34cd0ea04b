"""When deferred mail is tried again, and when mailmoat gives up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mailmoat.domain.retry import RetrySchedule

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_the_defaults_follow_rfc_5321_and_postfix() -> None:
    schedule = RetrySchedule()
    assert schedule.first == timedelta(minutes=5)
    assert schedule.lifetime == timedelta(days=5)
    assert schedule.longest <= timedelta(hours=1)


def test_delays_double_from_the_first_up_to_the_longest() -> None:
    schedule = RetrySchedule(timedelta(minutes=5), timedelta(hours=1), jitter=0.0)
    delays = [schedule.delay(n) for n in range(1, 8)]
    assert delays == [timedelta(minutes=m) for m in (5, 10, 20, 40, 60, 60, 60)]
    assert schedule.delay(10_000) == timedelta(hours=1)  # no overflow


def test_jitter_spreads_delays_within_its_fraction() -> None:
    schedule = RetrySchedule(timedelta(minutes=10), timedelta(hours=1), jitter=0.1)
    rng = random.Random(3)
    delays = {schedule.delay(1, rng) for _ in range(200)}
    assert len(delays) > 100
    assert all(timedelta(minutes=9) <= d <= timedelta(minutes=11) for d in delays)


def test_the_last_attempt_is_at_the_end_of_the_lifetime_then_it_gives_up() -> None:
    schedule = RetrySchedule(timedelta(hours=1), timedelta(hours=1), timedelta(hours=5), jitter=0)
    assert schedule.next_attempt(1, T0, T0) == T0 + timedelta(hours=1)
    late = T0 + timedelta(hours=4, minutes=30)
    assert schedule.next_attempt(5, T0, late) == T0 + timedelta(hours=5)
    assert schedule.next_attempt(6, T0, T0 + timedelta(hours=5)) is None
    assert schedule.expired(T0, T0 + timedelta(hours=5))
    assert not schedule.expired(T0, T0 + timedelta(hours=4, minutes=59))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first": timedelta(0)},
        {"first": timedelta(hours=2), "longest": timedelta(hours=1)},
        {"jitter": 1.0},
    ],
)
def test_nonsense_schedules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetrySchedule(**kwargs)  # type: ignore[arg-type]
