"""Throw-away PostgreSQL databases for tests and benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy.engine import make_url


async def throwaway_postgres(
    url: str, prefix: str = "mailmoat_test"
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A fresh database beside the one named in ``url``: its URL and a dropper."""
    parsed = make_url(url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    new_url = parsed.set(drivername="postgresql", database=name)
    return new_url.render_as_string(hide_password=False), drop
