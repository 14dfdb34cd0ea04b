"""Where the bytes of a message are kept: in the database when small, else the spool.

A message up to ``inline_max`` bytes (most mail) is a row of ``message_contents``,
inserted in the same transaction as its record: the commit that makes the record
durable makes the bytes durable too, so accepting it costs no file, no file fsync
and no directory fsync, and every node that shares the database can read it. A
larger message gets a spool file, written and fsynced before its record is
committed (see db/spool.py). Either way the record's ``spool_key`` finds the
bytes; readers need not know where they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.spool import Spool
from mailmoat.db.tables import MessageContent

DEFAULT_INLINE_MAX = 128 * 1024


class MessageStore:
    def __init__(self, db: Database, spool: Spool, inline_max: int = DEFAULT_INLINE_MAX) -> None:
        self.db = db
        self.spool = spool
        self.inline_max = inline_max  # 0: every message in a spool file

    def keeps_inline(self, data: bytes) -> bool:
        return 0 < len(data) <= self.inline_max

    async def read(self, key: str) -> bytes:
        """The bytes kept under ``key``; raises SpoolError when there are none.

        A database failure is raised as it is: it says nothing about the message
        (delivery defers it as a local error, the API answers 500, not 404)."""
        async with self.db.read() as session:
            data = await session.scalar(
                select(MessageContent.data).where(MessageContent.message_id == key)
            )
        if data is not None:
            return bytes(data)
        return await self.spool.read(key)

    async def delete_files(self, keys: Sequence[str]) -> None:
        """Remove the spool files of ``keys``, if any; call after ``forget`` committed."""
        for key in keys:
            await self.spool.delete(key)


async def forget(session: AsyncSession, keys: Sequence[str]) -> None:
    """Delete the database-kept bytes of ``keys`` in the caller's transaction."""
    if keys:
        await session.execute(delete(MessageContent).where(MessageContent.message_id.in_(keys)))
