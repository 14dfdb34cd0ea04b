"""When to try a deferred message again, and when to give up on it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Exponential backoff between ``first`` and ``longest``; give up after ``lifetime``.

    The defaults follow RFC 5321 section 4.5.4.1 and Postfix: a first retry after
    five minutes, doubling up to about an hour between tries, and giving up five
    days after the message arrived.
    """

    first: timedelta = timedelta(minutes=5)
    longest: timedelta = timedelta(hours=1)
    lifetime: timedelta = timedelta(days=5)
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.first <= timedelta(0) or self.longest < self.first:
            raise ValueError("retry delays must be positive, the longest at least the first")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be a fraction below 1")

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        """How long to wait after the ``attempts``-th failed attempt (1 for the first).

        A little random spread keeps messages deferred together by one outage from
        all coming back in the same second.
        """
        exponent = min(max(attempts, 1) - 1, 64)
        seconds = min(self.first.total_seconds() * 2.0**exponent, self.longest.total_seconds())
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return timedelta(seconds=seconds * (1 + spread))

    def expired(self, queued_at: datetime, now: datetime) -> bool:
        """True once a message has waited its whole lifetime in the queue."""
        return now - queued_at >= self.lifetime

    def next_attempt(
        self, attempts: int, queued_at: datetime, now: datetime, rng: random.Random | None = None
    ) -> datetime | None:
        """When to try again, or None when the next try would come after the lifetime.

        The last try is moved to the end of the lifetime rather than skipped, so a
        message always gets one last chance before it is returned.
        """
        if self.expired(queued_at, now):
            return None
        return min(now + self.delay(attempts, rng), queued_at + self.lifetime)
