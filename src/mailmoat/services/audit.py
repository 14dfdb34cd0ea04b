"""The audit trail: who did what to mail, lists and settings, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.tables import AuditEvent, utcnow
from mailmoat.services.caller import Actor


@dataclass(frozen=True, slots=True)
class AuditView:
    at: datetime
    actor: str
    action: str
    detail: str
    message_id: str | None


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    *,
    domain_id: str | None,
    message_id: str | None = None,
    detail: str = "",
) -> None:
    await session.execute(
        insert(AuditEvent).values(
            customer_id=actor.customer_id,
            domain_id=domain_id,
            message_id=message_id,
            actor=actor.name[:200],
            action=action,
            detail=detail[:1000],
            at=utcnow(),
        )
    )


async def of_message(session: AsyncSession, message_id: str) -> list[AuditView]:
    rows = await session.scalars(
        select(AuditEvent)
        .where(AuditEvent.message_id == message_id)
        .order_by(AuditEvent.at, AuditEvent.id)
    )
    return [_view(r) for r in rows]


async def of_domain(session: AsyncSession, domain_id: str, limit: int = 50) -> list[AuditView]:
    rows = await session.scalars(
        select(AuditEvent)
        .where(AuditEvent.domain_id == domain_id)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(limit)
    )
    return [_view(r) for r in rows]


def _view(row: AuditEvent) -> AuditView:
    return AuditView(row.at, row.actor, row.action, row.detail, row.message_id)
