"""The delivery queue as the operator sees it: depth, retry now, drop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from mailmoat.db import queue_repo
from mailmoat.db.database import Database
from mailmoat.db.queue_repo import DepthRow, Key
from mailmoat.domain.names import InvalidName, parse_domain
from mailmoat.services.errors import InvalidInput

CHUNK = 500
Progress = Callable[[int], None]


class QueueService:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def depth(self) -> list[DepthRow]:
        async with self.db.read() as session:
            return await queue_repo.depth(session, datetime.now(UTC))

    async def select(self, message_ids: Sequence[str], domain: str | None) -> list[Key]:
        """The waiting (not in flight) queue rows of these messages or this domain."""
        name = None
        if domain is not None:
            try:
                name = parse_domain(domain).ascii
            except InvalidName as exc:
                raise InvalidInput(str(exc)) from None
        async with self.db.read() as session:
            return await queue_repo.waiting(
                session, datetime.now(UTC), message_ids=message_ids, domain=name
            )

    async def retry_now(self, keys: Sequence[Key], progress: Progress | None = None) -> int:
        return await self._chunked(queue_repo.retry_now, keys, progress)

    async def drop(self, keys: Sequence[Key], progress: Progress | None = None) -> int:
        return await self._chunked(queue_repo.drop, keys, progress)

    async def _chunked(
        self, operation: queue_repo.KeyOperation, keys: Sequence[Key], progress: Progress | None
    ) -> int:
        done = 0
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            async with self.db.write() as session:
                done += await operation(session, chunk, datetime.now(UTC))
            if progress is not None:
                progress(len(chunk))
        return done
