"""Database errors, which end up in logs, never show the values of a statement."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mailmoat.db.database import Database


async def test_a_failed_statement_does_not_show_its_parameters(database: Database) -> None:
    secret = "whsec_do-not-log-0123456789"
    with pytest.raises(DBAPIError) as failed:
        async with database.write() as session:
            await session.execute(
                text("INSERT INTO no_such_table (secret) VALUES (:secret)"), {"secret": secret}
            )
    assert "no_such_table" in str(failed.value)  # the statement is still named
    assert secret not in str(failed.value)
