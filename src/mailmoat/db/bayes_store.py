"""Bayes token counts in the database (the built-in scanner's ``TokenStore``).

``counts`` runs on every scanned message, so it is one statement: on SQLite through
the inline reader when there is one, otherwise through an async read session.
``learn`` runs on reports, which are rare: upserts in one write transaction.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import String, any_, bindparam, cast, null, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ColumnElement

from mailmoat.db.database import Database
from mailmoat.db.inline_sqlite import InlineUnavailable
from mailmoat.db.tables import BayesToken, BayesTotals

Counts = tuple[int, int]

LEARN_BATCH = 500
"""Rows per upsert statement (four parameters each; well within every driver's limit)."""

_tokens = BayesToken.__table__
_totals = BayesTotals.__table__


TOTALS_SECONDS = 1.0
"""How long a scope's totals are remembered: they only decide whether a message is
worth tokenizing, and a report's effect may show a second late in other processes."""
_remembered: dict[str, tuple[float, Counts]] = {}  # per process, by scope


class DatabaseTokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def totals(self, scope: str) -> Counts | None:
        """Read inline on SQLite (and remembered a moment); elsewhere not worth a trip."""
        if self.db.inline is None:
            return None
        now = time.monotonic()
        known = _remembered.get(scope)
        if known is not None and now - known[0] < TOTALS_SECONDS:
            return known[1]
        try:
            found = self.db.inline.bayes_totals(scope)
        except InlineUnavailable:
            return None
        if len(_remembered) > 10_000:
            _remembered.clear()
        _remembered[scope] = (now, found)
        return found

    async def counts(self, scope: str, tokens: Collection[str]) -> tuple[Counts, dict[str, Counts]]:
        wanted = list(tokens)
        rows: Sequence[Any] | None = None
        if self.db.inline is not None:
            try:
                rows = self.db.inline.bayes_counts(scope, wanted)
            except InlineUnavailable:
                rows = None
        if rows is None:
            async with self.db.read() as session:
                rows = (await session.execute(self._counts_query(scope, wanted))).all()
        totals: Counts = (0, 0)
        found: dict[str, Counts] = {}
        for token, spam, ham in rows:
            if token is None:
                totals = (int(spam), int(ham))
            else:
                found[token] = (int(spam), int(ham))
        return totals, found

    def _counts_query(self, scope: str, tokens: list[str]) -> Any:
        match: ColumnElement[bool]
        if self.db.is_sqlite:
            match = _tokens.c.token.in_(tokens)
        else:
            # One array parameter instead of one parameter per token.
            match = _tokens.c.token == any_(
                bindparam("tokens", tokens, type_=postgresql.ARRAY(String))
            )
        known = select(_tokens.c.token, _tokens.c.spam, _tokens.c.ham).where(
            _tokens.c.scope == scope, match
        )
        total = select(cast(null(), String).label("token"), _totals.c.spam, _totals.c.ham).where(
            _totals.c.scope == scope
        )
        return known.union_all(total)

    async def learn(self, scope: str, tokens: Collection[str], spam: bool) -> None:
        # Sorted, so that concurrent learners lock rows in the same order (no deadlock).
        ordered = sorted(set(tokens))
        add = {"spam": 1, "ham": 0} if spam else {"spam": 0, "ham": 1}
        async with self.db.write() as session:
            await self._upsert(session, _totals, ["scope"], [{"scope": scope, **add}])
            for start in range(0, len(ordered), LEARN_BATCH):
                batch = ordered[start : start + LEARN_BATCH]
                rows = [{"scope": scope, "token": token, **add} for token in batch]
                await self._upsert(session, _tokens, ["scope", "token"], rows)
        _remembered.pop(scope, None)  # this process sees what it learned at once

    async def _upsert(
        self, session: AsyncSession, table: Any, keys: list[str], rows: list[dict[str, Any]]
    ) -> None:
        insert = sqlite.insert if self.db.is_sqlite else postgresql.insert
        statement = insert(table).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=keys,
            set_={
                "spam": table.c.spam + statement.excluded.spam,
                "ham": table.c.ham + statement.excluded.ham,
            },
        )
        await session.execute(statement)
