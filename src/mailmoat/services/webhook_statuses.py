"""Incoming statuses: what became of each message sent to a webhook address."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_, select

from mailmoat.db.database import Database
from mailmoat.db.tables import DeliveryAttempt, Message, MessageRecipient
from mailmoat.domain.states import MessageState
from mailmoat.domain.webhooks import (
    REASON_MAX_SIZE,
    REASON_WEBHOOK_DELAYED,
    REASON_WEBHOOK_POSTING,
    StatusCategory,
    category_of,
)
from mailmoat.services.caller import Caller
from mailmoat.services.errors import InvalidInput, NotFound
from mailmoat.services.messages import utc_bound

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class StatusFilter:
    address_id: str | None = None
    status: int | None = None
    category: str | None = None
    to: str | None = None
    sender: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class PostAttempt:
    at: datetime
    target: str
    outcome: str
    status: int | None
    reply: str
    response: str | None


@dataclass(frozen=True, slots=True)
class StatusView:
    id: str
    address_id: str | None
    status: int | None
    category: str
    state: str
    to: str
    recipients: list[str]
    sender: str
    subject: str | None
    message_id: str | None
    created_at: datetime
    reply: str
    attempts: list[PostAttempt]


def _category_condition(category: str) -> ColumnElement[bool]:
    try:
        wanted = StatusCategory(category)
    except ValueError:
        names = ", ".join(c.value for c in StatusCategory)
        raise InvalidInput(f"status_category must be one of {names}") from None
    max_size = Message.reason == REASON_MAX_SIZE
    delayed = or_(
        Message.state.in_([MessageState.QUEUED, MessageState.DEFERRED]),
        Message.reason.in_([REASON_WEBHOOK_DELAYED, REASON_WEBHOOK_POSTING]),
    )
    if wanted is StatusCategory.MAX_SIZE:
        return max_size
    if wanted is StatusCategory.SUCCESSFUL:
        return Message.state == MessageState.DELIVERED
    if wanted is StatusCategory.DELAYED:
        return and_(delayed, not_(max_size))
    return and_(not_(max_size), not_(delayed), Message.state != MessageState.DELIVERED)


def _last_status() -> Any:
    return (
        select(DeliveryAttempt.http_status)
        .where(DeliveryAttempt.message_id == Message.id)
        .order_by(DeliveryAttempt.id.desc())
        .limit(1)
        .scalar_subquery()
    )


class WebhookStatusService:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def page(
        self, caller: Caller, wanted: StatusFilter, limit: int, offset: int
    ) -> tuple[list[StatusView], int]:
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise InvalidInput(f"limit must be 1-{MAX_PAGE} and offset not negative")
        query = select(Message).where(
            Message.customer_id == caller.customer_id, Message.address_id.is_not(None)
        )
        if wanted.address_id:
            query = query.where(Message.address_id == wanted.address_id)
        if wanted.status is not None:
            query = query.where(_last_status() == wanted.status)
        if wanted.category:
            query = query.where(_category_condition(wanted.category))
        if wanted.to:
            query = query.where(
                select(MessageRecipient.id)
                .where(
                    MessageRecipient.message_id == Message.id,
                    func.lower(MessageRecipient.address) == wanted.to.strip().lower(),
                )
                .exists()
            )
        if wanted.sender:
            query = query.where(func.lower(Message.mail_from) == wanted.sender.strip().lower())
        if wanted.subject:
            query = query.where(
                func.lower(Message.subject).contains(
                    wanted.subject.strip().lower(), autoescape=True
                )
            )
        if wanted.since is not None:
            query = query.where(Message.received_at >= utc_bound(wanted.since))
        if wanted.until is not None:
            query = query.where(Message.received_at < utc_bound(wanted.until))
        async with self.db.read() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = list(
                await session.scalars(
                    query.order_by(Message.received_at.desc(), Message.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
            return await self._views(session, rows), int(total or 0)

    async def get(self, caller: Caller, message_id: str) -> StatusView:
        async with self.db.read() as session:
            row = await session.get(Message, message_id)
            if row is None or row.customer_id != caller.customer_id or row.address_id is None:
                raise NotFound(f"status {message_id} does not exist")
            return (await self._views(session, [row]))[0]

    @staticmethod
    async def _views(session: Any, messages: list[Message]) -> list[StatusView]:
        ids = [m.id for m in messages]
        recipients: dict[str, list[str]] = defaultdict(list)
        attempts: dict[str, list[PostAttempt]] = defaultdict(list)
        if ids:
            for message_id, address in await session.execute(
                select(MessageRecipient.message_id, MessageRecipient.address)
                .where(MessageRecipient.message_id.in_(ids))
                .order_by(MessageRecipient.id)
            ):
                recipients[message_id].append(address)
            for row in await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.message_id.in_(ids))
                .order_by(DeliveryAttempt.id)
            ):
                attempts[row.message_id].append(
                    PostAttempt(
                        row.attempted_at,
                        row.target,
                        row.outcome,
                        row.http_status,
                        row.reply,
                        row.response,
                    )
                )
        views = []
        for m in messages:
            tried = attempts[m.id]
            views.append(
                StatusView(
                    id=m.id,
                    address_id=m.address_id,
                    status=tried[-1].status if tried else None,
                    category=category_of(m.state, m.reason).value,
                    state=m.state,
                    to=recipients[m.id][0] if recipients[m.id] else "",
                    recipients=recipients[m.id],
                    sender=m.mail_from,
                    subject=m.subject,
                    message_id=m.message_id_header,
                    created_at=m.received_at,
                    reply=m.reply,
                    attempts=tried,
                )
            )
        return views
