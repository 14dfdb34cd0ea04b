"""The database handle: engines, sessions and URL handling for SQLite and PostgreSQL.

SQLite allows one writer at a time. To avoid ``database is locked`` errors when a
read transaction later tries to write, write transactions on SQLite run on their
own engine that opens them with ``BEGIN IMMEDIATE``. Reads run in autocommit mode
(each statement sees the latest committed state, thanks to WAL, without the cost
of a transaction round trip); the few reads that must be consistent across several
statements belong in ``write()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from mailmoat.db.inline_sqlite import InlineSqlite
from mailmoat.redact import mask_secrets


def normalize_database_url(url: str) -> URL:
    """Map plain URLs onto the async drivers mailmoat uses.

    Raises ``ValueError`` for URLs it cannot use, never with their password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # Not echoed: a mistyped URL may hold a password where no mask can find it.
        raise ValueError(
            "the database URL does not parse: use postgresql://… or sqlite:///…"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    shown = mask_secrets(parsed.render_as_string(hide_password=True))
    raise ValueError(f"unsupported database URL {shown}: use postgresql://… or sqlite:///…")


def sqlite_url_for(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'mailmoat.db').resolve()}"


def _sqlite_pragmas(immediate: bool, busy_timeout_ms: int = 10000) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # The writer syncs the WAL on every commit: an accepted message's row must
        # survive a power cut, not only a crash of the process (NORMAL would do that).
        cursor.execute(f"PRAGMA synchronous={'FULL' if immediate else 'NORMAL'}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    return on_connect


HIDE_PARAMETERS = True
"""Statement parameters stay out of error messages and logs: they carry tokens, signing
secrets, addresses and message contents."""

LOCK_RETRY_SECONDS = 0.0005
LOCK_WAIT_LIMIT = 10.0


def _begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_locked(error: OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the write lock."""
    return "locked" in str(error)


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_database_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.inline: InlineSqlite | None = None
        if self.is_sqlite:
            self._prepare_sqlite_dir()
            if self.url.database and self.url.database != ":memory:":
                self.inline = InlineSqlite(self.url.database)
            self.engine = self._sqlite_engine(immediate=False, echo=echo)
            self.write_engine = self._sqlite_engine(immediate=True, echo=echo)
        else:
            self.engine = create_async_engine(
                self.url,
                echo=echo,
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
                hide_parameters=HIDE_PARAMETERS,
            )
            self.write_engine = self.engine
        self._sync_write_engine: Engine | None = None
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)

    def _prepare_sqlite_dir(self) -> None:
        database = self.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

    def _sqlite_engine(self, *, immediate: bool, echo: bool) -> AsyncEngine:
        engine = create_async_engine(
            self.url,
            echo=echo,
            pool_size=1 if immediate else 5,
            max_overflow=0 if immediate else 5,
            hide_parameters=HIDE_PARAMETERS,
            # Readers never write, so there is nothing to roll back when they are
            # returned to the pool; every statement costs a trip to the driver thread.
            pool_reset_on_return="rollback" if immediate else None,
        )
        # The writer waits for the write lock itself (see write()): SQLite's busy
        # handler would sleep up to 100 ms at a time and lose every race.
        pragmas = _sqlite_pragmas(immediate, busy_timeout_ms=0 if immediate else 10000)
        event.listen(engine.sync_engine, "connect", pragmas)
        if immediate:

            @event.listens_for(engine.sync_engine, "begin")
            def do_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def sync_write_engine(self) -> Engine:
        """SQLite only: a synchronous writer for the group commit (db/group_commit.py).

        Group commits of many rows (the message log) are cheaper as a few direct
        calls to the driver than as many round trips through aiosqlite. Beginning
        a transaction takes the write lock at once or fails (``is_locked``): the
        caller waits for it without blocking anything.
        """
        assert self.is_sqlite
        if self._sync_write_engine is None:
            engine = create_engine(
                self.url.set(drivername="sqlite+pysqlite"),
                pool_size=1,
                max_overflow=0,
                connect_args={"check_same_thread": False},
                hide_parameters=HIDE_PARAMETERS,
            )
            # SQLite's own busy handler sleeps 1, 2, 5, 10… ms between tries: the
            # processes of one node would leave the write lock idle most of the time.
            event.listen(engine, "connect", _sqlite_pragmas(immediate=True, busy_timeout_ms=0))
            event.listen(engine, "begin", _begin_immediate)

            self._sync_write_engine = engine
        return self._sync_write_engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for queries only; its transaction is rolled back at the end."""
        async with self._read_sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits when the block ends without error."""
        if not self.is_sqlite:
            async with self._write_sessions() as session, session.begin():
                yield session
            return
        session = await self._sqlite_writer()
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            await session.close()

    async def _sqlite_writer(self) -> AsyncSession:
        """A session holding SQLite's write lock (BEGIN IMMEDIATE), waited for here,
        without blocking the event loop, as often as the group-commit writer does."""
        deadline = time.monotonic() + LOCK_WAIT_LIMIT
        while True:
            session = self._write_sessions()
            try:
                await session.connection()  # begins: BEGIN IMMEDIATE
                return session
            except OperationalError as exc:
                await session.close()
                if not is_locked(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(LOCK_RETRY_SECONDS * 2)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        if self.inline is not None:
            self.inline.close()
        await self.engine.dispose()
        if self._sync_write_engine is not None:
            self._sync_write_engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()
