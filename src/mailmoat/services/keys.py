"""API keys: creation (the token is shown once), authentication, listing, deletion.

A key that holds domain associations guards those domains from the customer's other
keys, so only the key itself (or the operator's command line) may delete it.
Deleting a key also takes back what it issued: its unused login links and the
console sessions started from its links.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update

from mailmoat.db.database import Database
from mailmoat.db.inline_sqlite import InlineUnavailable
from mailmoat.db.tables import ApiKey, ConsoleSession, Customer, Domain, LoginLink
from mailmoat.services.caller import Caller
from mailmoat.services.errors import Forbidden, InvalidInput, NotFound
from mailmoat.services.secrets import TokenHasher, new_token

TOKEN_PREFIX = "mm"
MAX_DESCRIPTION = 500


@dataclass(frozen=True, slots=True)
class KeyView:
    id: str
    prefix: str
    description: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewKey:
    key: KeyView
    token: str


@dataclass(frozen=True, slots=True)
class KeyDeletion:
    """What deleting a key undid."""

    released: list[str]  # the domains that were associated with it (U-labels)
    links_deleted: int  # its unused login links
    sessions_ended: int  # console sessions started from its links


def _view(row: ApiKey) -> KeyView:
    return KeyView(row.id, row.prefix, row.description, row.created_at)


def _clean_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION or "\x00" in description:
        raise InvalidInput(f"description must be at most {MAX_DESCRIPTION} printable characters")
    return description


class KeyService:
    """API keys. Successful authentications are cached for ``cache_seconds``.

    The cache saves a database round trip on every request. Deleting a key clears
    it from this process's cache at once; other nodes of an installation accept
    the deleted key for at most ``cache_seconds`` more (0 turns the cache off).
    """

    MAX_CACHED = 10_000

    def __init__(self, database: Database, hasher: TokenHasher, cache_seconds: float = 0.0) -> None:
        self.db = database
        self.hasher = hasher
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Caller]] = {}
        # Bumped by every deletion: a lookup that began before it caches nothing.
        self._generation = 0

    async def create(self, customer_id: str, description: str = "") -> NewKey:
        description = _clean_description(description)
        token = new_token(TOKEN_PREFIX)
        async with self.db.write() as session:
            if await session.get(Customer, customer_id) is None:
                raise NotFound("customer not found")
            row = ApiKey(
                customer_id=customer_id,
                token_hash=self.hasher.hash(token),
                prefix=token[:10],
                description=description,
            )
            session.add(row)
            await session.flush()
            return NewKey(_view(row), token)

    async def authenticate(self, token: str) -> Caller | None:
        if not token or len(token) > 200:
            return None
        token_hash = self.hasher.hash(token)
        cached = self._cache.get(token_hash)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        generation = self._generation
        row = await self._key_row(token_hash)
        if row is None:
            self._cache.pop(token_hash, None)
            return None
        caller = Caller(customer_id=row[1], customer_handle=row[2], key_id=row[0])
        if self.cache_seconds > 0 and generation == self._generation:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            self._cache[token_hash] = (now + self.cache_seconds, caller)
        return caller

    async def _key_row(self, token_hash: str) -> tuple[str, str, str] | None:
        """(key id, customer id, customer handle) of the key with this hash."""
        if self.db.inline is not None:
            try:
                return self.db.inline.api_key(token_hash)
            except InlineUnavailable:
                pass
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(ApiKey.id, ApiKey.customer_id, Customer.handle)
                    .join(Customer, Customer.id == ApiKey.customer_id)
                    .where(ApiKey.token_hash == token_hash)
                )
            ).first()
        return (row.id, row.customer_id, row.handle) if row is not None else None

    def _forget(self, key_id: str) -> None:
        self._generation += 1
        for token_hash, (_, caller) in list(self._cache.items()):
            if caller.key_id == key_id:
                del self._cache[token_hash]

    async def find_id(self, customer_id: str, token: str) -> str | None:
        """The id of the customer's key with this token, if it is one of theirs."""
        async with self.db.read() as session:
            return await session.scalar(
                select(ApiKey.id).where(
                    ApiKey.token_hash == self.hasher.hash(token),
                    ApiKey.customer_id == customer_id,
                )
            )

    async def of_customer(self, customer_id: str) -> list[KeyView]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(ApiKey)
                .where(ApiKey.customer_id == customer_id)
                .order_by(ApiKey.created_at, ApiKey.id)
            )
            return [_view(r) for r in rows]

    async def delete(self, key_id: str, *, caller: Caller | None = None) -> KeyDeletion:
        """Delete a key on behalf of ``caller`` (None: the operator, who may delete any
        key). Its domains become open to the customer's other keys; a key holding
        associations may be deleted only by itself or the operator."""
        async with self.db.write() as session:
            # Locked first: an association with this key made meanwhile (its foreign
            # key check) waits for this transaction and is then seen below.
            row = await session.get(ApiKey, key_id, with_for_update=True)
            if row is None or (caller is not None and row.customer_id != caller.customer_id):
                raise NotFound(f"API key {key_id!r} not found")
            released = list(
                await session.scalars(
                    select(Domain.name_unicode)
                    .where(Domain.api_key_id == key_id)
                    .order_by(Domain.name_ascii)
                )
            )
            if released and caller is not None and caller.key_id != key_id:
                raise Forbidden(
                    f"API key {key_id!r} holds domain associations: "
                    "only that key itself can delete it"
                )
            await session.execute(
                update(Domain).where(Domain.api_key_id == key_id).values(api_key_id=None)
            )
            # Links before sessions: a sign-in racing with this waits on its link's
            # row, and the session it started is then seen and ended.
            links = await session.execute(
                delete(LoginLink).where(LoginLink.api_key_id == key_id, LoginLink.used_at.is_(None))
            )
            sessions = await session.execute(
                delete(ConsoleSession).where(ConsoleSession.api_key_id == key_id)
            )
            await session.delete(row)
        self._forget(key_id)
        return KeyDeletion(
            released,
            int(links.rowcount),  # type: ignore[attr-defined]
            int(sessions.rowcount),  # type: ignore[attr-defined]
        )
