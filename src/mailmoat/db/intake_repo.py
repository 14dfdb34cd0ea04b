"""Lookups made for every RCPT: the recipient's domain, user record and list entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.tables import ListEntry, Recipient

RECIPIENT_SQL = "SELECT id, filter, abuse_policy FROM recipients WHERE email = ?"
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


async def list_entries(
    session: AsyncSession, customer_id: str, scopes: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    rows = await session.execute(
        select(ListEntry.scope, ListEntry.action, ListEntry.item, ListEntry.item_type).where(
            ListEntry.customer_id == customer_id, ListEntry.scope.in_(scopes)
        )
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]
