"""Group commit: many small writes from concurrent SMTP sessions in one transaction.

Every accepted message needs a committed row before its 250. Committing each on
its own costs one fsync (SQLite) or one round trip with a flush (PostgreSQL) per
message; the batch writer hands everything that arrived while the previous commit
was running to one ``flush`` instead. If a batch fails, its items are retried one
at a time, so a bad item takes down only itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class BatchWriter(Generic[Item]):
    def __init__(
        self,
        flush: Callable[[Sequence[Item]], Awaitable[None]],
        *,
        max_batch: int = 256,
        item_fault: Callable[[Exception], bool] = lambda _: True,
    ) -> None:
        self.flush = flush
        self.max_batch = max_batch
        # Whether a failure may be one item's fault (worth trying them one by one);
        # a lost database or lock is not, and would only fail once per item.
        self.item_fault = item_fault
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> None:
        """Write ``item`` with the next batch; return once that batch is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await future

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        try:
            await self.flush([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or not self.item_fault(exc):
                for _, future in batch:
                    _settle(future, exc)
                return
            log.warning("batch of %d writes failed (%s); retrying one by one", len(batch), exc)
            for one in batch:
                await self._commit([one])
            return
        for _, future in batch:
            _settle(future, None)

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
