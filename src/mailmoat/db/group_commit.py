"""One writer per process: the hot writes of many callers, committed together.

Every accepted message, every claim of the delivery queue and every delivery
outcome is a small write that must be committed before its caller goes on. Done
one by one they cost one commit (an fsync on SQLite) each; here everything that
arrives while the previous commit runs goes into the next transaction.

Spool files are written as soon as they are submitted, side by side on a pool of
threads, overlapping the previous transaction; a batch waits for its files, then
fsyncs their directories once while its statements run, before its commit.

With SQLite the statements run on the event loop, as direct calls to the driver:
SQLite allows one writer at a time (across the processes of a node too), and
statements run from a thread would wait for the interpreter lock between calls
while holding SQLite's write lock (several milliseconds each time the event loop
is busy). Taking the write lock does not block (see ``_begin_sqlite``), and the
commit, which waits for the disk, runs on a thread of its own. With PostgreSQL
the same functions run in one async session (``run_sync``).

A work item is a function of a SQLAlchemy ``Connection``; its return value is
handed back to its caller once the transaction has committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from mailmoat.db.batch_writer import BatchWriter
from mailmoat.db.database import LOCK_RETRY_SECONDS, LOCK_WAIT_LIMIT, Database, is_locked
from mailmoat.db.spool import fsync_directories

T = TypeVar("T")
FILE_WRITERS = 16


P = TypeVar("P")
Merged = Callable[[Connection, list[Any]], list[Any]]
Prepare = Callable[[], Path]


@dataclass(eq=False, slots=True)
class _Work(Generic[T]):
    apply: Callable[[Connection], T] | None  # one caller's own statements, or
    merged: Merged | None  # a function that serves many callers' ``payload``s at once
    payload: Any
    prepare: Sequence[Prepare]  # file writes, each giving a directory to fsync
    started: list[Future[Path]] = field(default_factory=list)  # those writes, under way
    result: Any = None


@dataclass(slots=True)
class GroupCommit:
    db: Database
    max_batch: int = 256
    _writer: BatchWriter[_Work[Any]] = field(init=False)
    _thread: ThreadPoolExecutor | None = field(init=False, default=None)
    _files: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._writer = BatchWriter(self._flush, max_batch=self.max_batch, item_fault=_item_fault)
        if self.db.is_sqlite:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="mailmoat-commit")
        # File writes wait on fsync: they go side by side, so that the file system
        # can commit them together, and overlap the writer's transactions.
        self._files = ThreadPoolExecutor(FILE_WRITERS, thread_name_prefix="mailmoat-files")

    async def run(self, apply: Callable[[Connection], T]) -> T:
        """Run ``apply`` in the next group transaction; return its result once committed."""
        work: _Work[T] = _Work(apply, None, None, ())
        await self._writer.submit(work)
        result: T = work.result
        return result

    async def run_merged(
        self,
        merged: Callable[[Connection, list[P]], list[T]],
        payload: P,
        *,
        prepare: Sequence[Prepare] = (),
    ) -> T:
        """Like ``run``, but the payloads of every caller of ``merged`` in one group
        transaction go to one call of ``merged``, which returns one result each:
        the same statements for many rows cost about what they cost for one.

        ``prepare`` are file writes (the spool's) the writer makes durable before the
        transaction: each writes and fsyncs a file and returns its directory, and the
        directories are fsynced once per batch.
        """
        work: _Work[T] = _Work(None, merged, payload, prepare)
        # The files are written at once, side by side, while the writer may still be
        # committing an earlier batch; the writer waits for them before its commit.
        work.started = [self._files.submit(step) for step in prepare]
        await self._writer.submit(work)
        result: T = work.result
        return result

    async def _flush(self, batch: Sequence[_Work[Any]]) -> None:
        loop = asyncio.get_running_loop()
        synced: asyncio.Future[None] | None = None
        if any(work.started for work in batch):
            # The files are waited for in a thread (one wake-up of the event loop per
            # batch, not one per file); their directories are fsynced while the
            # statements run, and the commit waits for that.
            directories = await loop.run_in_executor(self._thread, _written, batch)
            synced = loop.run_in_executor(self._files, fsync_directories, directories)
        try:
            if self._thread is not None:
                results = await self._flush_sqlite(batch, synced)
            else:
                async with self.db.write() as session:
                    results = await session.run_sync(_run_session, batch)
                    if synced is not None:
                        await synced
        finally:
            if synced is not None and not synced.done():
                await asyncio.gather(synced, return_exceptions=True)
        for work, result in zip(batch, results, strict=True):
            work.result = result

    async def _flush_sqlite(
        self, batch: Sequence[_Work[Any]], synced: asyncio.Future[None] | None
    ) -> list[Any]:
        conn = await self._begin_sqlite()
        try:
            results = _apply(conn, batch)
            if synced is not None:
                await synced
        except BaseException:
            conn.close()  # rolls back
            raise
        await asyncio.get_running_loop().run_in_executor(self._thread, _commit_and_close, conn)
        return results

    async def _begin_sqlite(self) -> Connection:
        """A connection holding SQLite's write lock, waited for without blocking: the
        lock is tried again every millisecond, instead of SQLite's busy handler
        sleeping up to 100 ms at a time."""
        engine = self.db.sync_write_engine()
        deadline = time.monotonic() + LOCK_WAIT_LIMIT
        while True:
            conn = engine.connect()
            try:
                conn.begin()
                return conn
            except OperationalError as exc:
                conn.close()
                if not is_locked(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(LOCK_RETRY_SECONDS * 2)

    async def close(self) -> None:
        await self._writer.close()
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        self._files.shutdown(wait=True)


def _item_fault(error: Exception) -> bool:
    """False for failures of the database itself (connection lost, write lock not had)."""
    if isinstance(error, DBAPIError):
        return not (error.connection_invalidated or "database is locked" in str(error))
    return True


def _written(batch: Sequence[_Work[Any]]) -> set[Path]:
    """Wait for the batch's file writes (raising the first failure); the directories
    whose new entries must be made durable."""
    return {write.result() for work in batch for write in work.started}


def _commit_and_close(conn: Connection) -> None:
    try:
        conn.commit()
    finally:
        conn.close()


def _run_session(session: Session, batch: Sequence[_Work[Any]]) -> list[Any]:
    return _apply(session.connection(), batch)


def _apply(conn: Connection, batch: Sequence[_Work[Any]]) -> list[Any]:
    results: dict[int, Any] = {}
    groups: dict[Merged, list[int]] = {}
    for index, work in enumerate(batch):
        if work.apply is not None:
            results[index] = work.apply(conn)
        else:
            assert work.merged is not None
            groups.setdefault(work.merged, []).append(index)
    for merged, indexes in groups.items():
        found = merged(conn, [batch[i].payload for i in indexes])
        results.update(zip(indexes, found, strict=True))
    return [results[i] for i in range(len(batch))]
