"""Lookups made for every RCPT: the recipient's domain, user record and list entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.tables import ListEntry, Recipient, Subscription

RECIPIENT_SQL = "SELECT id, filter, abuse_policy FROM recipients WHERE email = ?"
LIMIT_SQL = "SELECT protected_address_limit FROM subscriptions WHERE id = ?"
# Counted no further than the limit: the cost of the question is bounded by the limit.
FILTERED_SQL = (
    "SELECT count(*) FROM (SELECT 1 FROM recipients WHERE subscription_id = ? AND filter LIMIT ?)"
)
ENTRIES_SQL = (
    "SELECT scope, action, item, item_type FROM list_entries "
    "WHERE customer_id = ? AND scope IN (?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class RecipientRow:
    id: str
    filter: bool
    abuse_policy: str | None


def recipient_row(row: Sequence[Any] | None) -> RecipientRow | None:
    return None if row is None else RecipientRow(str(row[0]), bool(row[1]), row[2])


def room_left(limit: int | None, filtered: int) -> bool:
    """The protected-address limit: new users are filtered while it has room."""
    return limit is None or filtered < limit


def entry_scopes(domain_id: str, recipient_id: str | None) -> tuple[str, str, str]:
    # "user:" alone matches no entry: an address without a user record has no user tier.
    return ("account", f"domain:{domain_id}", f"user:{recipient_id or ''}")


async def find_recipient(session: AsyncSession, email: str) -> RecipientRow | None:
    row = (
        await session.execute(
            select(Recipient.id, Recipient.filter, Recipient.abuse_policy).where(
                Recipient.email == email
            )
        )
    ).first()
    return recipient_row(row)


async def new_user_filtered(session: AsyncSession, subscription_id: str, taken: int = 0) -> bool:
    """Whether a user created now for the subscription would be filtered, with
    ``taken`` more places of its limit promised already."""
    limit = await session.scalar(
        select(Subscription.protected_address_limit).where(Subscription.id == subscription_id)
    )
    if limit is None:
        return True
    filtered = (
        select(Recipient.id)
        .where(Recipient.subscription_id == subscription_id, Recipient.filter.is_(True))
        .limit(limit)
        .subquery()
    )
    count = await session.scalar(select(func.count()).select_from(filtered))
    return room_left(limit, int(count or 0) + taken)


async def list_entries(
    session: AsyncSession, customer_id: str, scopes: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    rows = await session.execute(
        select(ListEntry.scope, ListEntry.action, ListEntry.item, ListEntry.item_type).where(
            ListEntry.customer_id == customer_id, ListEntry.scope.in_(scopes)
        )
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]
