"""Login links into the Domain Console: opaque, hashed, single use, expiring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.tables import ApiKey, LoginLink, new_id, utcnow
from mailmoat.services.caller import Caller
from mailmoat.services.domains import MAX_BATCH, load_domains
from mailmoat.services.errors import InvalidInput, ServiceError, Unauthorized
from mailmoat.services.secrets import TokenHasher, new_token

CONSOLE_LOGIN_PATH = "/console/login/"


@dataclass(frozen=True, slots=True)
class LinkResult:
    domain: str
    code: int
    comment: str
    url: str | None = None


class LoginLinkService:
    def __init__(
        self, database: Database, hasher: TokenHasher, public_url: str, lifetime: timedelta
    ) -> None:
        self.db = database
        self.hasher = hasher
        self.public_url = public_url.rstrip("/")
        self.lifetime = lifetime

    async def create(self, caller: Caller, raw_name: str) -> str:
        results = await self.create_many(caller, [raw_name], single=True)
        assert results[0].url is not None
        return results[0].url

    async def create_many(
        self, caller: Caller, names: Sequence[str], *, single: bool = False
    ) -> list[LinkResult]:
        if not 1 <= len(names) <= MAX_BATCH:
            raise InvalidInput(f"name between 1 and {MAX_BATCH} domains")
        results: list[LinkResult] = []
        expires = utcnow() + self.lifetime
        async with self.db.write() as session:
            if caller.key_id:
                await _lock_issuer(session, caller.key_id)
            found = await load_domains(session, caller, names, foreign=Unauthorized)
            rows: list[dict[str, object]] = []
            for raw, domain in zip(names, found, strict=True):
                if isinstance(domain, ServiceError):
                    if single:
                        raise domain
                    results.append(LinkResult(str(raw), domain.code, domain.message))
                    continue
                token = new_token("ml")
                rows.append(
                    {
                        "id": new_id(),
                        "domain_id": domain.id,
                        "token_hash": self.hasher.hash(token),
                        # Deleting the key deletes the link while it is unused.
                        "api_key_id": caller.key_id or None,
                        "expires_at": expires,
                    }
                )
                results.append(
                    LinkResult(
                        domain.name_unicode,
                        200,
                        f"valid until {expires.isoformat(timespec='seconds')}",
                        f"{self.public_url}{CONSOLE_LOGIN_PATH}{token}",
                    )
                )
            if rows:
                await session.execute(insert(LoginLink), rows)
        return results


async def _lock_issuer(session: AsyncSession, key_id: str) -> None:
    """Hold the issuing key while its links are written: a deletion of the key (which
    deletes its links) waits, and a key deleted already (a node may still trust it
    from its cache) issues nothing."""
    found = await session.scalar(
        select(ApiKey.id).where(ApiKey.id == key_id).with_for_update(read=True)
    )
    if found is None:
        raise Unauthorized("invalid API key")
