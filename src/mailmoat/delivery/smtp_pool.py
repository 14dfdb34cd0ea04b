"""A bounded pool of reusable connections per destination, for the SMTP relay.

Each key (an address and port) has at most ``limit`` connections, busy and idle
together: a downstream server that sees more connections from one client than it
allows answers 421, so the limit is counted until a connection is really closed,
including the moment spent saying QUIT. Whoever holds a *slot* may own one
connection; ``checkout`` hands out a slot with an idle connection when there is
one, otherwise a bare slot in which the caller opens a new connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class PooledConnection(Protocol):
    @property
    def usable(self) -> bool:
        """Still connected and fit for another transaction."""

    def abort(self) -> None:
        """Close at once, without a goodbye."""

    async def aclose(self) -> None:
        """Close politely (QUIT); never raises except on cancellation."""


C = TypeVar("C", bound=PooledConnection)


@dataclass(eq=False)
class _Slots(Generic[C]):
    open: int = 0  # slots taken: busy connections, idle ones and ones being opened or closed
    idle: list[tuple[float, C]] = field(default_factory=list)  # (idle since, connection)
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


class ConnectionPool(Generic[C]):
    def __init__(self, *, limit: int, idle_timeout: float) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.idle_timeout = idle_timeout
        self._slots: dict[Hashable, _Slots[C]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    async def checkout(self, key: Hashable) -> C | None:
        """Take a slot; returns an idle connection to reuse, or None: open one yourself.

        The caller must end with ``checkin`` (keeping the connection for reuse) or
        ``release`` (after closing its connection, if it has one). Waiters are served
        in order, so a busy destination cannot starve one send.
        """
        if self._closed:
            raise RuntimeError("connection pool is closed")
        slots = self._slots.setdefault(key, _Slots())
        woken = False
        while True:
            if woken or not slots.waiters:
                taken, connection = self._take(slots)
                if taken:
                    return connection
            waiter = asyncio.get_running_loop().create_future()
            if woken:
                slots.waiters.appendleft(waiter)
            else:
                slots.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in slots.waiters:
                    slots.waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake(slots)  # pass the wake-up on to the next in line
                raise
            woken = True

    def checkin(self, key: Hashable, connection: C) -> None:
        """Keep a connection after a transaction, for the next send to its destination."""
        slots = self._slots[key]
        if self._closed or not connection.usable:
            connection.abort()
            self.release(key)
            return
        slots.idle.append((asyncio.get_running_loop().time(), connection))
        self._wake(slots)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="smtp-pool-sweeper")

    def release(self, key: Hashable) -> None:
        """Give back a slot whose connection is closed (or was never opened)."""
        slots = self._slots[key]
        slots.open -= 1
        woke = self._wake(slots)
        if not woke and slots.open == 0 and not slots.idle and not slots.waiters:
            del self._slots[key]  # forget destinations no longer in use

    async def close(self) -> None:
        """Close every idle connection and stop the sweeper; the pool is unusable after."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        idle = [(key, c) for key, slots in self._slots.items() for _, c in slots.idle]
        for slots in self._slots.values():
            slots.idle.clear()
        await asyncio.gather(*(self._retire(key, c) for key, c in idle))

    def _take(self, slots: _Slots[C]) -> tuple[bool, C | None]:
        if slots.idle:
            _, connection = slots.idle.pop()  # the most recently used: the others age out
            if connection.usable:
                return True, connection
            connection.abort()  # closed by the server while idle: its slot is ours now
            return True, None
        if slots.open < self.limit:
            slots.open += 1
            return True, None
        return False, None

    @staticmethod
    def _wake(slots: _Slots[C]) -> bool:
        """Wake the first waiter still waiting; False when there was none."""
        while slots.waiters:
            waiter = slots.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    async def _retire(self, key: Hashable, connection: C) -> None:
        try:
            await connection.aclose()
        finally:
            self.release(key)

    async def _sweep(self) -> None:
        """Close connections idle too long; ends when nothing is idle any more."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            expired: list[tuple[Hashable, C]] = []
            next_due: float | None = None
            for key, slots in self._slots.items():
                keep = []
                for since, connection in slots.idle:
                    if now - since >= self.idle_timeout or not connection.usable:
                        expired.append((key, connection))
                    else:
                        keep.append((since, connection))
                        due = since + self.idle_timeout
                        next_due = due if next_due is None else min(next_due, due)
                slots.idle = keep
            if expired:
                log.debug("closing %d idle connection(s)", len(expired))
                await asyncio.gather(*(self._retire(key, c) for key, c in expired))
                continue
            if next_due is None:
                return
            await asyncio.sleep(max(next_due - now, 0.01))
