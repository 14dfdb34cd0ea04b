"""Logging a failure that repeats, once per interval, with a count of the repeats.

Loops that retry (the delivery worker, SMTP intake) can fail the same way many
times a second while the database is read-only or the disk is full; one line per
failure would bury the first cause and fill the disk that is already full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

REPEAT_INTERVAL = 60.0  # seconds between two log lines of one repeated failure
MAX_KINDS = 1000  # failures remembered at once; beyond that the oldest are forgotten


@dataclass(slots=True)
class _Seen:
    logged_at: float
    held_back: int = 0


class LogThrottle:
    """Logs each kind of failure at once, then at most once per ``interval``; a line
    after held-back repeats says how many there were. ``recovered`` ends a kind."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = REPEAT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[str, Hashable], _Seen] = {}

    def failed(
        self,
        what: str,
        exc: BaseException | None,
        message: str,
        *args: object,
        level: int = logging.ERROR,
    ) -> None:
        """Log ``message`` (with ``exc``'s traceback) unless the same failure of
        ``what`` (same exception type and text) was logged less than an interval ago."""
        key = (what, _identity(exc))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.logged_at < self.interval:
            seen.held_back += 1
            return
        if seen is not None and seen.held_back:
            message += " (%d more times since it was last logged)"
            args = (*args, seen.held_back)
        if seen is None and len(self._seen) >= MAX_KINDS:
            del self._seen[next(iter(self._seen))]
        self._seen.pop(key, None)
        self._seen[key] = _Seen(now)
        self.logger.log(level, message, *args, exc_info=exc)

    def recovered(self, what: str, message: str, *args: object) -> None:
        """``what`` works again: log ``message`` if it had failed, and forget it."""
        if not self._seen:
            return
        keys = [key for key in self._seen if key[0] == what]
        if not keys:
            return
        held_back = sum(self._seen.pop(key).held_back for key in keys)
        if held_back:
            message += " (after %d more failures that were not logged)"
            args = (*args, held_back)
        self.logger.warning(message, *args)


def _identity(exc: BaseException | None) -> Hashable:
    """What makes two failures the same: the exception's type and the cause's reason
    (the driver's error, the errno), not SQL parameters, times or message ids."""
    if exc is None:
        return None
    cause = getattr(exc, "orig", None) or exc.__cause__ or exc
    if isinstance(cause, OSError) and cause.errno is not None:
        return (type(exc).__qualname__, type(cause).__qualname__, cause.errno)
    lines = str(cause).strip().splitlines()
    return (type(exc).__qualname__, type(cause).__qualname__, lines[0][:200] if lines else "")
