"""Lookups of webhook routing: addresses by token or id, custom domains, signing secrets."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.tables import CustomDomain, WebhookAddress, WebhookSecret, new_id, utcnow
from mailmoat.domain.webhooks import WebhookRoute, custom_domain_keys

SECRET_GRACE = timedelta(hours=24)  # the previous secret still signs this long


def _route(row: WebhookAddress) -> WebhookRoute:
    return WebhookRoute(
        row.id, row.customer_id, row.target, row.target_format, row.mode, row.max_size
    )


@dataclass(frozen=True, slots=True)
class CustomRoute:
    name_ascii: str
    pattern: str | None
    address: WebhookRoute


async def address_by_id(session: AsyncSession, address_id: str) -> WebhookRoute | None:
    row = await session.get(WebhookAddress, address_id)
    return None if row is None else _route(row)


async def address_by_token(session: AsyncSession, token: str) -> WebhookRoute | None:
    row = await session.scalar(select(WebhookAddress).where(WebhookAddress.token == token))
    return None if row is None else _route(row)


async def custom_routes(session: AsyncSession, names: Sequence[str]) -> list[CustomRoute]:
    """Custom domains among ``names`` (exact and wildcard forms) with their addresses."""
    rows = await session.execute(
        select(CustomDomain, WebhookAddress)
        .join(WebhookAddress, WebhookAddress.id == CustomDomain.address_id)
        .where(CustomDomain.name_ascii.in_(list(names)))
    )
    return [CustomRoute(d.name_ascii, d.pattern, _route(a)) for d, a in rows]


async def routed_names(session: AsyncSession, names: Sequence[str]) -> set[str]:
    """Those of ``names`` that a custom domain (exact or wildcard) routes to a webhook."""
    keys = {key: name for name in names for key in custom_domain_keys(name)}
    if not keys:
        return set()
    found = await session.scalars(
        select(CustomDomain.name_ascii).where(CustomDomain.name_ascii.in_(list(keys)))
    )
    return {keys[key] for key in found}


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


async def secret_rows(session: AsyncSession, customer_id: str) -> list[WebhookSecret]:
    """The customer's signing secrets, newest first."""
    found = await session.scalars(
        select(WebhookSecret)
        .where(WebhookSecret.customer_id == customer_id)
        .order_by(WebhookSecret.created_at.desc(), WebhookSecret.id.desc())
    )
    return list(found)


def add_secret(session: AsyncSession, customer_id: str) -> WebhookSecret:
    row = WebhookSecret(
        id=new_id(), customer_id=customer_id, secret=new_secret(), created_at=utcnow()
    )
    session.add(row)
    return row


async def current_secrets(db: Database, customer_id: str) -> list[WebhookSecret]:
    """The customer's secrets, newest first; the first one is made on first use."""
    async with db.read() as session:
        rows = await secret_rows(session, customer_id)
    if rows:
        return rows
    async with db.write() as session:
        rows = await secret_rows(session, customer_id)
        if not rows:
            add_secret(session, customer_id)
            await session.flush()
            rows = await secret_rows(session, customer_id)
        return rows


def signing_keys(rows: Sequence[WebhookSecret]) -> list[str]:
    """Newest first; the one before it too while within the grace after a rotation."""
    if not rows:
        return []
    keys = [rows[0].secret]
    if len(rows) > 1 and rows[0].created_at + SECRET_GRACE > utcnow():
        keys.append(rows[1].secret)
    return keys
