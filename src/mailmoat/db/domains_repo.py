"""Queries on domains and what hangs off them (aliases, admins, downstream addresses)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.tables import (
    Domain,
    DomainAdmin,
    DomainAlias,
    DownstreamAddress,
    Subscription,
)

CHUNK = 500


def chunks(values: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def visible_to(customer_id: str, key_id: str) -> ColumnElement[bool]:
    """Domains a key may see: the customer's, unassociated or associated with it."""
    return and_(
        Domain.customer_id == customer_id,
        or_(Domain.api_key_id.is_(None), Domain.api_key_id == key_id),
    )


async def domain_by_name(session: AsyncSession, name_ascii: str) -> Domain | None:
    return await session.scalar(select(Domain).where(Domain.name_ascii == name_ascii))


async def alias_owner(session: AsyncSession, name_ascii: str) -> Domain | None:
    return await session.scalar(
        select(Domain)
        .join(DomainAlias, DomainAlias.domain_id == Domain.id)
        .where(DomainAlias.name_ascii == name_ascii)
    )


async def alias_owners(session: AsyncSession, names: Sequence[str]) -> dict[str, Domain]:
    """Map of alias name → the domain it is an alias of, for names in use as aliases."""
    found: dict[str, Domain] = {}
    for part in chunks(list(names)):
        rows = await session.execute(
            select(DomainAlias.name_ascii, Domain)
            .join(Domain, DomainAlias.domain_id == Domain.id)
            .where(DomainAlias.name_ascii.in_(part))
        )
        found.update({name: domain for name, domain in rows})
    return found


async def domains_by_names(session: AsyncSession, names: Sequence[str]) -> dict[str, Domain]:
    found: dict[str, Domain] = {}
    for part in chunks(list(names)):
        rows = await session.scalars(select(Domain).where(Domain.name_ascii.in_(part)))
        found.update({d.name_ascii: d for d in rows})
    return found


async def alias_names_taken(session: AsyncSession, names: Sequence[str]) -> dict[str, str]:
    """Map of alias name → id of the domain it belongs to, for names in use as aliases."""
    found: dict[str, str] = {}
    for part in chunks(list(names)):
        rows = await session.execute(
            select(DomainAlias.name_ascii, DomainAlias.domain_id).where(
                DomainAlias.name_ascii.in_(part)
            )
        )
        found.update({name: domain_id for name, domain_id in rows})
    return found


async def count_in_subscription(session: AsyncSession, subscription_id: str) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Domain)
            .where(Domain.subscription_id == subscription_id)
        )
        or 0
    )


async def subscription_handles(session: AsyncSession, ids: Iterable[str]) -> dict[str, str]:
    unique = list(set(ids))
    result: dict[str, str] = {}
    for part in chunks(unique):
        rows = await session.execute(
            select(Subscription.id, Subscription.handle).where(Subscription.id.in_(part))
        )
        result.update({i: h for i, h in rows})
    return result


async def children(
    session: AsyncSession, domain_ids: Sequence[str]
) -> tuple[dict[str, list[DomainAlias]], dict[str, list[str]], dict[str, list[DownstreamAddress]]]:
    aliases: dict[str, list[DomainAlias]] = defaultdict(list)
    admins: dict[str, list[str]] = defaultdict(list)
    downstreams: dict[str, list[DownstreamAddress]] = defaultdict(list)
    for part in chunks(list(domain_ids)):
        for alias in await session.scalars(
            select(DomainAlias)
            .where(DomainAlias.domain_id.in_(part))
            .order_by(DomainAlias.name_ascii)
        ):
            aliases[alias.domain_id].append(alias)
        for domain_id, email in await session.execute(
            select(DomainAdmin.domain_id, DomainAdmin.email)
            .where(DomainAdmin.domain_id.in_(part))
            .order_by(DomainAdmin.email)
        ):
            admins[domain_id].append(email)
        for record in await session.scalars(
            select(DownstreamAddress)
            .where(DownstreamAddress.domain_id.in_(part))
            .order_by(DownstreamAddress.position)
        ):
            downstreams[record.domain_id].append(record)
    return aliases, admins, downstreams


async def bulk_insert(session: AsyncSession, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(table), rows)


async def clear_children(session: AsyncSession, table: Any, domain_id: str) -> None:
    await session.execute(delete(table).where(table.domain_id == domain_id))
