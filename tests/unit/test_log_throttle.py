"""A failure that repeats is logged once per interval, with the count of repeats."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from mailmoat.log_throttle import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def readonly(n: int) -> OperationalError:
    """The same database error, with different parameters each time."""
    return OperationalError(f"UPDATE queue SET at={n}", {"n": n}, Exception("readonly database"))


def test_a_repeated_failure_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("t"), 60.0, clock=clock)
    with caplog.at_level(logging.ERROR, "t"):
        for n in range(45):
            throttle.failed("claim", readonly(n), "claiming failed")
            clock.now += 0.5  # 45 failures in 22.5 s
        assert [r.getMessage() for r in caplog.records] == ["claiming failed"]
        assert caplog.records[0].exc_info is not None  # the first one with its traceback
        clock.now += 60
        throttle.failed("claim", readonly(99), "claiming failed")
    assert caplog.records[-1].getMessage() == (
        "claiming failed (44 more times since it was last logged)"
    )


def test_different_failures_are_each_logged(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("t"), 60.0, clock=Clock())
    with caplog.at_level(logging.ERROR, "t"):
        throttle.failed("claim", readonly(1), "claiming failed")
        throttle.failed("claim", OSError(28, "No space left on device"), "claiming failed")
        throttle.failed("renew", readonly(2), "renewing failed")
        throttle.failed("renew", readonly(3), "renewing failed")
    assert [r.getMessage() for r in caplog.records] == [
        "claiming failed",
        "claiming failed",
        "renewing failed",
    ]


def test_recovery_is_logged_with_what_was_held_back(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("t"), 60.0, clock=Clock())
    with caplog.at_level(logging.INFO, "t"):
        throttle.recovered("claim", "claiming works again")  # never failed: nothing to say
        for n in range(3):
            throttle.failed("claim", readonly(n), "claiming failed")
        throttle.recovered("claim", "claiming works again")
        throttle.failed("claim", readonly(9), "claiming failed")  # a new episode: at once
    assert [r.getMessage() for r in caplog.records] == [
        "claiming failed",
        "claiming works again (after 2 more failures that were not logged)",
        "claiming failed",
    ]
