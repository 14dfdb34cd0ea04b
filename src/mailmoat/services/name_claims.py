"""The names a customer may hold, for every service that gives names out.

Domains, aliases and custom domains are claimed here in the transaction that
creates them and released in the one that deletes them; the rule is
domain/claims.py, its enforcement db/claims_repo.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db import claims_repo
from mailmoat.db.claims_repo import Claim, Clash
from mailmoat.domain.claims import NameRules
from mailmoat.domain.names import parse_domain
from mailmoat.services.errors import Conflict, InvalidInput

DOMAIN = "domain"
ALIAS = "alias"
CUSTOM_DOMAIN = "custom-domain"

_KINDS = {
    DOMAIN: "a provisioned domain",
    ALIAS: "an alias",
    CUSTOM_DOMAIN: "a custom domain",
    claims_repo.PARENT: "the parent of other names",
}


class NameClaims:
    def __init__(self, rules: NameRules) -> None:
        self.rules = rules

    def check(self, name_ascii: str, shown: str) -> None:
        """Refuse (400) a name nobody may hold here."""
        reason = self.rules.refusal(name_ascii, shown)
        if reason is not None:
            raise InvalidInput(reason)

    def claim(self, name_ascii: str, kind: str, owner_id: str) -> Claim:
        return Claim(name_ascii, kind, owner_id, tuple(self.rules.parents(name_ascii)))

    async def take(
        self, session: AsyncSession, customer_id: str, claims: Sequence[Claim]
    ) -> list[Clash]:
        """See claims_repo.take: the caller rolls back when clashes come back."""
        try:
            return await claims_repo.take(session, customer_id, claims)
        except claims_repo.ClaimsChanged:
            raise Conflict("the names changed concurrently; try again") from None

    async def take_all(
        self,
        session: AsyncSession,
        customer_id: str,
        claims: Sequence[Claim],
        shown: Mapping[str, str] | None = None,
    ) -> None:
        """Take every claim or raise Conflict (409) for the first that clashes; the
        caller's transaction is then rolled back."""
        clashes = await self.take(session, customer_id, claims)
        if clashes:
            raise Conflict(describe(clashes[0], shown or {}))

    async def release(self, session: AsyncSession, customer_id: str, names: Sequence[str]) -> None:
        trees = [p for name in names for p in self.rules.parents(name)]
        await claims_repo.release(session, customer_id, names, trees)


def describe(clash: Clash, shown: Mapping[str, str]) -> str:
    """The refusal's text; it names nothing of another customer's but the clashing
    name itself or the parent the claim needed."""
    name = shown.get(clash.name, clash.name)
    if not clash.other_customer:
        return f"{name} is already in use here as {_KINDS.get(clash.kind, clash.kind)}"
    if clash.at == clash.name:
        if clash.kind == claims_repo.PARENT:
            return f"{name}: names under it belong to another customer"
        return f"{name} belongs to another customer"
    at = parse_domain(clash.at).unicode
    if clash.kind == claims_repo.PARENT:
        return f"{name}: names under {at} belong to another customer"
    return f"{name} is under {at}, which belongs to another customer"
