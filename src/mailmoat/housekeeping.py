"""Periodic chores of an installation: quarantine retention and ended console sessions.

Run by worker processes (one per node is enough; several are safe: each expired
message is claimed by one of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from mailmoat.services.container import Services

log = logging.getLogger("mailmoat.housekeeping")

INTERVAL = 60.0


async def sweep_once(services: Services) -> int:
    """One round of chores; returns how many quarantined messages retention deleted."""
    expired = await services.messages.expire_quarantine()
    if expired:
        log.info("quarantine retention deleted %d message(s)", expired)
    await services.console_sessions.forget_ended()
    return expired


@contextlib.asynccontextmanager
async def running_housekeeping(
    services: Services, interval: float = INTERVAL
) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            try:
                await sweep_once(services)
            except Exception:  # a chore failing must not stop the next round
                log.exception("housekeeping failed; trying again in %.0f s", interval)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="housekeeping")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
