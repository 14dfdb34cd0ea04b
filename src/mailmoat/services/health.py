"""Whether this node can accept mail: what /healthz reports to load balancers.

A node that answers every message with 451 (its database read-only, its disk
full) must look unhealthy, so that balancers send mail elsewhere. The checks
write, so their result is kept for a few seconds: a balancer polling often does
not load the database. Answers name the failing check and a short reason; the
log has the details (paths, the database's error), once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailmoat.db.database import Database
from mailmoat.db.health_repo import StorageProblem, probe_database_write, probe_directory
from mailmoat.log_throttle import LogThrottle

log = logging.getLogger(__name__)

DEFAULT_MIN_FREE = 100 * 1024 * 1024  # bytes free in the spool and database directories
DEFAULT_CACHE_SECONDS = 5.0
PROBE_TIMEOUT = 5.0  # seconds a check may take before it counts as failed


@dataclass(frozen=True, slots=True)
class Health:
    failures: dict[str, str]  # check → why it failed, briefly; empty when all is well

    @property
    def ok(self) -> bool:
        return not self.failures


class HealthService:
    def __init__(
        self,
        db: Database,
        spool_dir: Path,
        *,
        min_free: int = DEFAULT_MIN_FREE,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.min_free = min_free
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.directories = {"spool": spool_dir}
        if db.is_sqlite and db.url.database and db.url.database != ":memory:":
            self.directories["database directory"] = Path(db.url.database).parent
        self._last: tuple[float, Health] | None = None
        self._lock = asyncio.Lock()
        self._failures = LogThrottle(log)

    async def check(self) -> Health:
        """The health of this node, checked at most once per ``cache_seconds``."""
        async with self._lock:  # callers at the same time share one check
            if self._last is not None and self.clock() - self._last[0] < self.cache_seconds:
                return self._last[1]
            health = await self._check()
            self._last = (self.clock(), health)
            return health

    async def _check(self) -> Health:
        failures: dict[str, str] = {}
        try:
            await asyncio.wait_for(probe_database_write(self.db), PROBE_TIMEOUT)
        except Exception as exc:
            failures["database"] = "not writable"
            self._failed("database", "the database cannot be written: %s", _reason(exc))
        else:
            self._failures.recovered("database", "health: the database can be written again")
        seen: set[Path] = set()
        for name, directory in self.directories.items():
            if directory.resolve() in seen:
                continue
            seen.add(directory.resolve())
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(probe_directory, directory, self.min_free), PROBE_TIMEOUT
                )
            except StorageProblem as exc:
                failures[name] = exc.reason
                self._failed(name, "%s", exc)
            except Exception as exc:
                failures[name] = "not writable"
                self._failed(name, "storing a file in %s failed: %s", directory, _reason(exc))
            else:
                self._failures.recovered(name, "health: %s can store files again", name)
        return Health(failures)

    def _failed(self, check: str, message: str, *args: object) -> None:
        """The reason is in the message: no traceback, one line a minute per check."""
        self._failures.failed(check, None, "health: " + message, *args, level=logging.WARNING)


def _reason(exc: Exception) -> str:
    """An error's text without SQL, parameters or a traceback: the driver's reason."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT:.0f} s"
    reason = getattr(exc, "orig", None) or exc
    return (str(reason).strip().splitlines() or [type(exc).__name__])[0][:300]
