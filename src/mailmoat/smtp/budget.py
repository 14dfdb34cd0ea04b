"""A budget of bytes held in memory, shared by the SMTP sessions of a process."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024


class ByteBudget:
    """An asyncio semaphore counted in bytes, first come first served.

    A request larger than the whole budget is cut to the budget: such a message
    still gets through, alone.
    """

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.free = self.total
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        amount = await self._take(size)
        try:
            yield
        finally:
            self._give(amount)

    async def _take(self, size: int) -> int:
        amount = min(max(size, 0), self.total)
        if not self._waiting and amount <= self.free:
            self.free -= amount  # the usual case: no waiting
            return amount
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, turn)
        self._waiting.append(entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._give(amount)  # granted just as the session went away
            else:
                self._waiting.remove(entry)
                self._wake()  # a smaller request behind it may fit now
            raise
        return amount

    def _give(self, amount: int) -> None:
        self.free += amount
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            amount, turn = self._waiting.popleft()
            if turn.done():
                continue
            self.free -= amount
            turn.set_result(None)
