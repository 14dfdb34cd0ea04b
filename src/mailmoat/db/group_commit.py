"""One writer per process: the hot writes of many callers, committed together.

Every accepted message, every claim of the delivery queue and every delivery
outcome is a small write that must be committed before its caller goes on. Done
one by one they cost one commit (an fsync on SQLite) each; here everything that
arrives while the previous commit runs goes into the next transaction.

With SQLite the transaction runs on a thread of its own, synchronously: SQLite
allows one writer at a time (across processes too), and a transaction driven from
a busy event loop would hold that lock across the loop's other work. On the
thread the lock is held only while the statements run. With PostgreSQL the same
functions run in one async session (``run_sync``).

A work item is a function of a SQLAlchemy ``Connection``; its return value is
handed back to its caller once the transaction has committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailmoat.db.batch_writer import BatchWriter
from mailmoat.db.database import Database
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
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="mailmoat-writer")
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
        if self._thread is not None:
            engine = self.db.sync_write_engine()
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._thread, _run_sqlite, engine, batch)
        else:
            if any(work.started for work in batch):
                await asyncio.to_thread(_prepare, batch)
            async with self.db.write() as session:
                results = await session.run_sync(_run_session, batch)
        for work, result in zip(batch, results, strict=True):
            work.result = result

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


def _prepare(batch: Sequence[_Work[Any]]) -> None:
    """Wait for the batch's file writes (raising the first failure), then make their
    directory entries durable, once per directory."""
    writes = [write for work in batch for write in work.started]
    if writes:
        fsync_directories({write.result() for write in writes})


def _run_sqlite(engine: Engine, batch: Sequence[_Work[Any]]) -> list[Any]:
    _prepare(batch)
    with engine.begin() as conn:
        return _apply(conn, batch)


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
