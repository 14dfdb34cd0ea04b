"""The group commit: many callers' writes in shared transactions, on real databases.

What a caller must be able to count on: when ``run`` returns its write is
committed and its spool file complete under its final name; a failure of its own
file write is its own (the other callers' records are committed); and on SQLite
the wait for the write lock, held by another process of the node, never stalls
the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Connection, delete, insert, select

from mailmoat.db.database import Database
from mailmoat.db.group_commit import GroupCommit
from mailmoat.db.migrate import migrate
from mailmoat.db.spool import Spool, SpoolError
from mailmoat.db.tables import BayesTotals

SCOPE = "group-commit-test"  # scopes are at most 48 characters


def _insert_scopes(conn: Connection, scopes: list[str]) -> list[str]:
    conn.execute(insert(BayesTotals), [{"scope": s, "spam": 1, "ham": 0} for s in scopes])
    return scopes


async def _stored(db: Database) -> set[str]:
    async with db.read() as session:
        found = await session.execute(
            select(BayesTotals.scope).where(BayesTotals.scope.startswith(SCOPE))
        )
        return set(found.scalars())


@pytest.fixture
async def commits(database: Database) -> AsyncIterator[GroupCommit]:
    group = GroupCommit(database)
    yield group
    await group.close()
    async with database.write() as session:
        await session.execute(delete(BayesTotals).where(BayesTotals.scope.startswith(SCOPE)))


async def test_every_callers_record_and_file_are_kept(
    commits: GroupCommit, database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    keys = [f"{i:032x}" for i in range(1, 21)]

    async def one(key: str) -> str:
        write = partial(spool.write_now, key, f"message {key}".encode())
        return await commits.run_merged(_insert_scopes, f"{SCOPE}-{key[-8:]}", prepare=[write])

    results = await asyncio.gather(*(one(key) for key in keys))

    assert results == [f"{SCOPE}-{key[-8:]}" for key in keys]
    assert await _stored(database) == set(results)
    for key in keys:  # every file is complete, under its final name
        assert spool.path(key).read_bytes() == f"message {key}".encode()
    assert not list((tmp_path / "spool").rglob("*.tmp"))


async def test_a_failed_file_write_fails_only_its_caller(
    commits: GroupCommit, database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")

    def broken() -> Path:
        raise SpoolError("cannot store message: disk full")

    async def one(name: str, write: Callable[[], Path]) -> str:
        return await commits.run_merged(_insert_scopes, f"{SCOPE}-{name}", prepare=[write])

    outcomes = await asyncio.gather(
        one("a", partial(spool.write_now, "a" * 32, b"a")),
        one("broken", broken),
        one("b", partial(spool.write_now, "b" * 32, b"b")),
        return_exceptions=True,
    )

    assert outcomes[0] == f"{SCOPE}-a"
    assert isinstance(outcomes[1], SpoolError)
    assert outcomes[2] == f"{SCOPE}-b"
    assert await _stored(database) == {f"{SCOPE}-a", f"{SCOPE}-b"}


async def test_waiting_for_sqlites_write_lock_leaves_the_event_loop_free(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'mailmoat.db'}")
    await migrate(db)
    commits = GroupCommit(db)
    other_process = sqlite3.connect(tmp_path / "mailmoat.db", isolation_level=None)
    try:
        other_process.execute("BEGIN IMMEDIATE")  # holds the node's write lock
        write = asyncio.create_task(commits.run(partial(_insert_scopes, scopes=[SCOPE])))
        longest_gap = 0.0
        last = time.monotonic()
        for _ in range(40):  # 0.2 s in which the loop must keep running
            await asyncio.sleep(0.005)
            now = time.monotonic()
            longest_gap, last = max(longest_gap, now - last), now
        assert not write.done()  # still waiting for the lock…
        assert longest_gap < 0.1  # …while the event loop went on with other work
        other_process.execute("ROLLBACK")

        assert await asyncio.wait_for(write, 5) == [SCOPE]
        assert await _stored(db) == {SCOPE}
    finally:
        other_process.close()
        await commits.close()
        await db.dispose()
