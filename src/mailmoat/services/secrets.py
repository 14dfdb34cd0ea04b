"""Hashing of bearer secrets (API keys, login-link tokens) with a server-wide key.

A keyed HMAC, not a slow password hash: keys are 256-bit random values checked on
every request, so brute force is not the threat; a database dump alone must not
reveal usable keys. The HMAC key comes from MAILMOAT_SECRET_KEY, or is generated
once and kept in the database so every node of an installation shares it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailmoat.db.database import Database
from mailmoat.db.tables import ServerSecret

_HMAC_SECRET_NAME = "hmac-key"


class TokenHasher:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def hash(self, token: str) -> str:
        return hmac.new(self._key, token.encode("utf-8"), hashlib.sha256).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


async def load_hasher(database: Database, configured: str | None) -> TokenHasher:
    if configured:
        return TokenHasher(configured.encode("utf-8"))
    async with database.read() as session:
        stored = await session.get(ServerSecret, _HMAC_SECRET_NAME)
        if stored is not None:
            return TokenHasher(bytes.fromhex(stored.value))
    value = secrets.token_hex(32)
    try:
        async with database.write() as session:
            session.add(ServerSecret(name=_HMAC_SECRET_NAME, value=value))
    except IntegrityError:
        pass  # another node created it first; read theirs below
    async with database.read() as session:
        row = (
            await session.execute(
                select(ServerSecret.value).where(ServerSecret.name == _HMAC_SECRET_NAME)
            )
        ).scalar_one()
    return TokenHasher(bytes.fromhex(row))
