"""Hot-path lookups on SQLite, run inline on the event loop.

An indexed SELECT on SQLite takes microseconds; sending it to aiosqlite's worker
thread costs far more (several thread round trips per statement). For the few
lookups made on every request (API key, one domain and what hangs off it) mailmoat
keeps one read-only connection per process and queries it directly. In WAL mode
readers never wait for writers; if SQLite reports the database busy anyway, the
caller falls back to the ordinary async path (``InlineUnavailable``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from mailmoat.db.domains_repo import Children, DomainRow, collect_children
from mailmoat.db.intake_repo import (
    ENTRIES_SQL,
    FILTERED_SQL,
    LIMIT_SQL,
    RECIPIENT_SQL,
    RecipientRow,
    recipient_row,
    room_left,
)


class InlineUnavailable(Exception):
    """The inline reader cannot answer now; use the async path."""


_DOMAIN_COLUMNS = (
    "id, customer_id, subscription_id, name_ascii, name_unicode, api_key_id, "
    "abuse_policy, abuse_policy_override, spam_header_name, spam_header_value"
)
_DOMAIN = f"SELECT {_DOMAIN_COLUMNS} FROM domains WHERE name_ascii = ?"
_ALIAS_OWNER = (
    f"SELECT {', '.join('d.' + c.strip() for c in _DOMAIN_COLUMNS.split(','))} "
    "FROM domains d JOIN domain_aliases a ON a.domain_id = d.id WHERE a.name_ascii = ?"
)
_CHILDREN = (
    "SELECT 'alias', domain_id, NULL, name_ascii, name_unicode, NULL, NULL, NULL "
    "FROM domain_aliases WHERE domain_id = ?1 "
    "UNION ALL SELECT 'admin', domain_id, NULL, email, NULL, NULL, NULL, NULL "
    "FROM domain_admins WHERE domain_id = ?1 "
    "UNION ALL SELECT 'downstream', domain_id, position, target, NULL, priority, weight, port "
    "FROM downstream_addresses WHERE domain_id = ?1"
)
_KEY = (
    "SELECT k.id, k.customer_id, c.handle FROM api_keys k "
    "JOIN customers c ON c.id = k.customer_id WHERE k.token_hash = ?"
)
_SUBSCRIPTION_HANDLE = "SELECT handle FROM subscriptions WHERE id = ?"


def _domain(row: tuple[Any, ...] | None) -> DomainRow | None:
    if row is None:
        return None
    values = list(row)
    values[7] = bool(values[7])
    return DomainRow(*values)


class InlineSqlite:
    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=100")
            self._conn = conn
        return self._conn

    def _query(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._connection().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise InlineUnavailable(str(exc)) from exc

    def domain(self, name_ascii: str) -> DomainRow | None:
        rows = self._query(_DOMAIN, (name_ascii,))
        return _domain(rows[0] if rows else None)

    def alias_owner(self, name_ascii: str) -> DomainRow | None:
        rows = self._query(_ALIAS_OWNER, (name_ascii,))
        return _domain(rows[0] if rows else None)

    def children(self, domain_id: str) -> Children:
        return collect_children(self._query(_CHILDREN, (domain_id,)))

    def api_key(self, token_hash: str) -> tuple[str, str, str] | None:
        rows = self._query(_KEY, (token_hash,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def subscription_handle(self, subscription_id: str) -> str | None:
        rows = self._query(_SUBSCRIPTION_HANDLE, (subscription_id,))
        return str(rows[0][0]) if rows else None

    def recipient(self, email: str) -> RecipientRow | None:
        rows = self._query(RECIPIENT_SQL, (email,))
        return recipient_row(rows[0] if rows else None)

    def new_user_filtered(self, subscription_id: str, taken: int = 0) -> bool:
        """Whether a user created now for the subscription would be filtered, with
        ``taken`` more places of its limit promised already."""
        rows = self._query(LIMIT_SQL, (subscription_id,))
        limit = rows[0][0] if rows else None
        if limit is None:
            return True
        filtered = self._query(FILTERED_SQL, (subscription_id, limit))[0][0]
        return room_left(int(limit), int(filtered) + taken)

    def list_entries(
        self, customer_id: str, scopes: tuple[str, str, str]
    ) -> list[tuple[str, str, str, str]]:
        return [(r[0], r[1], r[2], r[3]) for r in self._query(ENTRIES_SQL, (customer_id, *scopes))]

    def bayes_totals(self, scope: str) -> tuple[int, int]:
        rows = self._query("SELECT spam, ham FROM bayes_totals WHERE scope = ?", (scope,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def bayes_counts(self, scope: str, tokens: Sequence[str]) -> list[tuple[Any, ...]]:
        """One Bayes scope's counts for ``tokens`` (those it knows) and its totals.

        Rows are ``(token, spam, ham)``; the totals row, if the scope has learned
        anything, has token ``None``. One statement, so one read snapshot.
        """
        placeholders = ",".join("?" * len(tokens))
        sql = (
            "SELECT token, spam, ham FROM bayes_tokens "
            f"WHERE scope = ? AND token IN ({placeholders}) "
            "UNION ALL SELECT NULL, spam, ham FROM bayes_totals WHERE scope = ?"
        )
        return self._query(sql, (scope, *tokens, scope))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
