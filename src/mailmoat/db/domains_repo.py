"""Queries on domains and what hangs off them (aliases, admins, downstream addresses)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    and_,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.tables import (
    Domain,
    DomainAdmin,
    DomainAlias,
    DownstreamAddress,
    Subscription,
)
from mailmoat.domain.downstream import DownstreamAddress as Downstream

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


async def alias_names_of(session: AsyncSession, domain_ids: str | Sequence[str]) -> list[str]:
    """The alias names of a domain, or of several."""
    ids = [domain_ids] if isinstance(domain_ids, str) else list(domain_ids)
    found: list[str] = []
    for part in chunks(ids):
        found.extend(
            await session.scalars(
                select(DomainAlias.name_ascii).where(DomainAlias.domain_id.in_(part))
            )
        )
    return found


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


# Subscription handles never change once created, so every process may keep them.
_HANDLES: dict[str, str] = {}


def known_subscription_handle(subscription_id: str) -> str | None:
    return _HANDLES.get(subscription_id)


async def subscription_handles(session: AsyncSession, ids: Iterable[str]) -> dict[str, str]:
    unique = set(ids)
    missing = [i for i in unique if i not in _HANDLES]
    for part in chunks(missing):
        rows = await session.execute(
            select(Subscription.id, Subscription.handle).where(Subscription.id.in_(part))
        )
        _HANDLES.update({i: h for i, h in rows})
    return {i: _HANDLES[i] for i in unique if i in _HANDLES}


@dataclass(slots=True)
class Children:
    """What hangs off a set of domains, by domain id, each list in display order."""

    aliases: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    admins: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    downstreams: dict[str, list[Downstream]] = field(default_factory=lambda: defaultdict(list))


def _children_query(part: Sequence[str]) -> Any:
    """Aliases, admins and downstream addresses in one round trip (UNION ALL)."""
    no_int = cast(null(), Integer)
    no_text = cast(null(), String)
    return union_all(
        select(
            literal("alias").label("kind"), DomainAlias.domain_id, no_int.label("pos"),
            DomainAlias.name_ascii.label("a"), DomainAlias.name_unicode.label("b"),
            no_int.label("priority"), no_int.label("weight"), no_int.label("port"),
        ).where(DomainAlias.domain_id.in_(part)),
        select(
            literal("admin"), DomainAdmin.domain_id, no_int, DomainAdmin.email, no_text,
            no_int, no_int, no_int,
        ).where(DomainAdmin.domain_id.in_(part)),
        select(
            literal("downstream"), DownstreamAddress.domain_id, DownstreamAddress.position,
            DownstreamAddress.target, no_text, DownstreamAddress.priority,
            DownstreamAddress.weight, DownstreamAddress.port,
        ).where(DownstreamAddress.domain_id.in_(part)),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DomainRow:
    """A domain's own columns, as read by the inline (hot-path) reader."""

    id: str
    customer_id: str
    subscription_id: str
    name_ascii: str
    name_unicode: str
    api_key_id: str | None
    abuse_policy: str
    abuse_policy_override: bool
    spam_header_name: str
    spam_header_value: str

    @classmethod
    def of(cls, domain: Domain) -> DomainRow:
        return cls(
            domain.id,
            domain.customer_id,
            domain.subscription_id,
            domain.name_ascii,
            domain.name_unicode,
            domain.api_key_id,
            domain.abuse_policy,
            domain.abuse_policy_override,
            domain.spam_header_name,
            domain.spam_header_value,
        )


async def children(session: AsyncSession, domain_ids: Sequence[str]) -> Children:
    rows: list[Any] = []
    for part in chunks(list(domain_ids)):
        rows.extend(await session.execute(_children_query(part)))
    return collect_children(rows)


def collect_children(rows: Iterable[Sequence[Any]]) -> Children:
    """Sort the rows of the children query into a Children, each list in display order."""
    found = Children()
    positioned: list[tuple[int, str, Downstream]] = []
    for kind, domain_id, pos, a, b, priority, weight, port in rows:
        if kind == "alias":
            found.aliases[domain_id].append((a, b))
        elif kind == "admin":
            found.admins[domain_id].append(a)
        else:
            positioned.append((pos, domain_id, Downstream(priority, weight, port, a)))
    for aliases in found.aliases.values():
        aliases.sort()
    for admins in found.admins.values():
        admins.sort()
    for _, domain_id, record in sorted(positioned, key=lambda p: p[0]):
        found.downstreams[domain_id].append(record)
    return found


async def bulk_insert(session: AsyncSession, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(table), rows)


async def clear_children(session: AsyncSession, table: Any, domain_id: str) -> None:
    await session.execute(delete(table).where(table.domain_id == domain_id))
