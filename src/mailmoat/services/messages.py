"""The message log and the quarantine: reading records, releasing and deleting mail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db import queue_repo
from mailmoat.db.contents import MessageStore, forget
from mailmoat.db.database import Database
from mailmoat.db.message_rows import ROUTE_DSN, ROUTE_HTTP, ROUTE_SMTP
from mailmoat.db.spool import SpoolError
from mailmoat.db.tables import Domain, Message, MessageRecipient
from mailmoat.domain.lists import ListAction
from mailmoat.domain.names import InvalidName, parse_email
from mailmoat.domain.states import STATES, MessageState
from mailmoat.domain.webhooks import (
    REASON_WEBHOOK_DELAYED,
    REASON_WEBHOOK_POSTING,
    REASON_WEBHOOK_REJECTED,
)
from mailmoat.services import audit
from mailmoat.services.caller import Actor, Caller
from mailmoat.services.domains import load_domain
from mailmoat.services.errors import Conflict, InvalidInput, NotFound
from mailmoat.services.lists import Scope, add_entry, parse_item

MessageQuery = Select[Any]

DELETED = MessageState.DELETED
FILTER_STATES = STATES
REDELIVERABLE = (MessageState.FAILED, MessageState.DELIVERED)
REASON_REDELIVERED = "redelivered"


@dataclass(frozen=True, slots=True)
class RecipientDelivery:
    address: str
    status: str  # pending, delivered, failed; "" when the message is not for delivery
    reply: str | None


@dataclass(frozen=True, slots=True)
class AttemptView:
    at: datetime
    target: str
    outcome: str
    reply: str
    recipients: list[str]


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    domain: str
    received_at: datetime
    client_ip: str
    client_helo: str
    mail_from: str
    recipients: list[str]
    size: int
    message_id_header: str | None
    subject: str | None
    verdict: str
    action: str
    reason: str
    score: float | None
    rules: list[dict[str, object]]
    auth_results: str | None
    state: str
    reply: str
    state_changed_at: datetime
    deliveries: list[RecipientDelivery]
    attempts: list[AttemptView]
    next_attempt_at: datetime | None
    related_id: str | None
    # When retention deletes it, for quarantined mail.
    quarantine_ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MessageFilter:
    state: str | None = None
    sender: str | None = None
    recipient: str | None = None
    subject: str | None = None  # a part of the subject, any case
    since: datetime | None = None
    until: datetime | None = None


def _visible(caller: Caller, within: str | None = None) -> MessageQuery:
    """Messages of the caller's customer, without those of domains tied to another key;
    only those of domain ``within`` when given (a console session's domain)."""
    other_key = exists().where(
        Domain.id == Message.domain_id,
        Domain.api_key_id.is_not(None),
        Domain.api_key_id != caller.key_id,
    )
    query = select(Message).where(Message.customer_id == caller.customer_id, ~other_key)
    if within is not None:
        query = query.where(Message.domain_id == within)
    return query


def _apply(query: MessageQuery, wanted: MessageFilter) -> MessageQuery:
    if wanted.state:
        if wanted.state not in FILTER_STATES:
            raise InvalidInput(f"state must be one of {', '.join(FILTER_STATES)}")
        query = query.where(Message.state == wanted.state)
    if wanted.sender is not None:
        query = query.where(func.lower(Message.mail_from) == wanted.sender.strip().lower())
    if wanted.recipient is not None:
        try:
            address = parse_email(wanted.recipient).ascii
        except InvalidName as exc:
            raise InvalidInput(f"recipient: {exc}") from None
        # Addresses are logged as the sender wrote them; mailboxes match in any case.
        query = query.where(
            exists().where(
                MessageRecipient.message_id == Message.id,
                func.lower(MessageRecipient.address) == address,
            )
        )
    if wanted.subject:
        query = query.where(
            func.lower(Message.subject).contains(wanted.subject.strip().lower(), autoescape=True)
        )
    if wanted.since is not None:
        query = query.where(Message.received_at >= utc_bound(wanted.since))
    if wanted.until is not None:
        query = query.where(Message.received_at < utc_bound(wanted.until))
    return query


def utc_bound(moment: datetime) -> datetime:
    """A filter bound as UTC (naive times are UTC); 400 when it has no UTC equivalent."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{moment.isoformat()} is out of range") from None


_ROUTED = (
    MessageState.QUEUED,
    MessageState.DEFERRED,
    MessageState.DELIVERED,
    MessageState.FAILED,
)


async def _views(
    session: AsyncSession, messages: Sequence[Message], retention: timedelta
) -> list[MessageView]:
    ids = [m.id for m in messages]
    routed = {m.id for m in messages if m.state in _ROUTED}
    recipients: dict[str, list[str]] = {i: [] for i in ids}
    deliveries: dict[str, list[RecipientDelivery]] = {i: [] for i in ids}
    if ids:
        rows = await session.execute(
            select(
                MessageRecipient.message_id,
                MessageRecipient.address,
                MessageRecipient.delivery_status,
                MessageRecipient.delivery_reply,
            )
            .where(MessageRecipient.message_id.in_(ids))
            .order_by(MessageRecipient.id)
        )
        for message_id, address, status, reply in rows:
            recipients[message_id].append(address)
            shown = (status or "pending") if message_id in routed else ""
            deliveries[message_id].append(RecipientDelivery(address, shown, reply))
    attempts = await queue_repo.attempts_of(session, ids)
    queued = await queue_repo.queued_of(session, ids)
    return [
        MessageView(
            m.id,
            m.domain_name,
            m.received_at,
            m.client_ip,
            m.client_helo,
            m.mail_from,
            recipients[m.id],
            m.size,
            m.message_id_header,
            m.subject,
            m.verdict,
            m.action,
            m.reason,
            m.score,
            list(m.rules or []),
            m.auth_results,
            m.state,
            m.reply,
            m.state_changed_at,
            deliveries[m.id],
            [
                AttemptView(a.attempted_at, a.target, a.outcome, a.reply, list(a.recipients))
                for a in attempts.get(m.id, [])
            ],
            queued[m.id].due_at if m.id in queued and queued[m.id].lease_owner is None else None,
            m.related_id,
            m.state_changed_at + retention if m.state == MessageState.QUARANTINED else None,
        )
        for m in messages
    ]


RETENTION_ACTOR = "mailmoat (quarantine retention)"
SWEEP_BATCH = 500


class MessageService:
    def __init__(
        self, database: Database, contents: MessageStore, retention: timedelta = timedelta(days=7)
    ) -> None:
        self.db = database
        self.contents = contents
        self.retention = retention

    async def for_domain(
        self,
        caller: Caller,
        domain: str,
        wanted: MessageFilter,
        limit: int,
        offset: int,
        *,
        within: str | None = None,
    ) -> tuple[list[MessageView], int]:
        """A domain's log, newest first, and how many records match in all."""
        async with self.db.read() as session:
            found = await load_domain(session, caller, domain)
            if within is not None and found.id != within:
                raise NotFound(f"domain {domain} does not exist")
            query = _apply(_visible(caller).where(Message.domain_id == found.id), wanted)
            return await self._page(session, query, limit, offset)

    async def quarantine(
        self, caller: Caller, limit: int, offset: int, *, within: str | None = None
    ) -> tuple[list[MessageView], int]:
        """Every quarantined message the caller may see, newest first."""
        async with self.db.read() as session:
            query = _visible(caller, within).where(Message.state == MessageState.QUARANTINED)
            return await self._page(session, query, limit, offset)

    async def _page(
        self, session: AsyncSession, query: MessageQuery, limit: int, offset: int
    ) -> tuple[list[MessageView], int]:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await session.scalars(
            query.order_by(Message.received_at.desc(), Message.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return await _views(session, list(rows), self.retention), int(total or 0)

    async def get(
        self, caller: Caller, message_id: str, *, within: str | None = None
    ) -> MessageView:
        async with self.db.read() as session:
            message = await self._load(session, caller, message_id, within)
            return (await _views(session, [message], self.retention))[0]

    async def audit_trail(
        self, caller: Caller, message_id: str, *, within: str | None = None
    ) -> list[audit.AuditView]:
        async with self.db.read() as session:
            message = await self._load(session, caller, message_id, within)
            return await audit.of_message(session, message.id)

    async def raw(self, caller: Caller, message_id: str, *, within: str | None = None) -> bytes:
        async with self.db.read() as session:
            message = await self._load(session, caller, message_id, within)
        if message.spool_key is None:
            raise NotFound(f"the content of message {message_id} is not kept")
        try:
            return await self.contents.read(message.spool_key)
        except SpoolError:
            raise NotFound(f"the content of message {message_id} is no longer available") from None

    async def release(
        self,
        caller: Caller,
        message_id: str,
        *,
        within: str | None = None,
        safelist_sender: bool = False,
    ) -> MessageView:
        """Hand a quarantined message to delivery; with ``safelist_sender``, first add its
        sender to the domain's safelist, so that their next mail is not filtered."""
        async with self.db.write() as session:
            message = await self._act_on_quarantined(
                session,
                caller,
                message_id,
                within,
                ListAction.SAFELIST if safelist_sender else None,
                "safelisted sender and released" if safelist_sender else "released",
            )
            return await self._queue(session, message)

    async def redeliver(
        self, caller: Caller, message_id: str, *, within: str | None = None
    ) -> MessageView:
        """Deliver a failed (or delivered) message again, to the recipients it did not
        reach, or to all of them when it reached everyone."""
        async with self.db.write() as session:
            message = await self._load(session, caller, message_id, within, lock=True)
            # A webhook that refused mail during SMTP may be sent it again, once fixed.
            refused_by_webhook = (
                message.address_id is not None
                and message.state == MessageState.REJECTED
                and message.reason
                in (REASON_WEBHOOK_REJECTED, REASON_WEBHOOK_DELAYED, REASON_WEBHOOK_POSTING)
            )
            if message.state not in REDELIVERABLE and not refused_by_webhook:
                raise Conflict(
                    f"message {message_id} is {message.state}: only failed or delivered "
                    "messages can be delivered again"
                )
            if message.spool_key is None:
                raise Conflict(f"the content of message {message_id} is no longer kept")
            await queue_repo.reset_recipients(session, message.id)
            if refused_by_webhook:
                # What the webhook answered during SMTP no longer describes the message.
                message.reason = REASON_REDELIVERED
            await audit.record(
                session,
                caller.actor,
                "redelivered",
                domain_id=message.domain_id,
                message_id=message.id,
                detail=f"was {message.state}",
            )
            return await self._queue(session, message)

    async def _queue(self, session: AsyncSession, message: Message) -> MessageView:
        if message.domain_id is None and message.address_id is None and not message.related_id:
            raise Conflict(
                f"message {message.id} has nowhere to go: its domain or webhook address was deleted"
            )
        now = datetime.now(UTC)
        message.state = MessageState.QUEUED
        message.state_changed_at = now
        route = (
            ROUTE_HTTP
            if message.address_id is not None
            else ROUTE_DSN
            if message.related_id is not None
            else ROUTE_SMTP
        )
        await queue_repo.enqueue(session, message.id, route, now)
        await session.flush()
        return (await _views(session, [message], self.retention))[0]

    async def delete(
        self,
        caller: Caller,
        message_id: str,
        *,
        within: str | None = None,
        block_sender: bool = False,
    ) -> None:
        """Delete a quarantined message's content; its log record stays, marked deleted.
        With ``block_sender``, first add its sender to the domain's blocklist."""
        async with self.db.write() as session:
            message = await self._act_on_quarantined(
                session,
                caller,
                message_id,
                within,
                ListAction.BLOCKLIST if block_sender else None,
                "blocked sender and deleted" if block_sender else "deleted",
            )
            keys = _kept([self._mark_deleted(message)])
            await forget(session, keys)
        await self.contents.delete_files(keys)

    @staticmethod
    def _mark_deleted(message: Message) -> str | None:
        key = message.spool_key
        message.state = DELETED
        message.spool_key = None
        message.state_changed_at = datetime.now(UTC)
        return key

    @staticmethod
    async def _list_sender(
        session: AsyncSession, caller: Caller, message: Message, action: ListAction
    ) -> str:
        if not message.mail_from or message.domain_id is None:
            raise Conflict(f"message {message.id} has no sender address to list")
        value = parse_item(message.mail_from)
        scope = Scope(f"domain:{message.domain_id}", message.domain_id)
        await add_entry(session, caller, scope, action, value)
        await audit.record(
            session,
            caller.actor,
            f"added to {action.value}",
            domain_id=message.domain_id,
            detail=value.item,
        )
        return f"{action.value}: {value.item}"

    async def expire_quarantine(self, now: datetime | None = None) -> int:
        """Delete quarantined mail older than the retention period; returns how many."""
        cutoff = (now or datetime.now(UTC)) - self.retention
        expired = 0
        while True:
            async with self.db.write() as session:
                rows = list(
                    await session.scalars(
                        select(Message)
                        .where(
                            Message.state == MessageState.QUARANTINED,
                            Message.state_changed_at < cutoff,
                        )
                        .order_by(Message.state_changed_at)
                        .limit(SWEEP_BATCH)
                        .with_for_update(skip_locked=True)
                    )
                )
                keys = []
                for message in rows:
                    await audit.record(
                        session,
                        Actor(message.customer_id, RETENTION_ACTOR),
                        "deleted",
                        domain_id=message.domain_id,
                        message_id=message.id,
                        detail=f"quarantined longer than {_days(self.retention)}",
                    )
                    keys.append(self._mark_deleted(message))
                kept = _kept(keys)
                await forget(session, kept)
            await self.contents.delete_files(kept)
            expired += len(rows)
            if len(rows) < SWEEP_BATCH:
                return expired

    async def state_counts(self) -> dict[str, int]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(Message.state, func.count()).group_by(Message.state)
            )
            return {state: int(count) for state, count in rows}

    async def _act_on_quarantined(
        self,
        session: AsyncSession,
        caller: Caller,
        message_id: str,
        within: str | None,
        list_sender: ListAction | None,
        action: str,
    ) -> Message:
        """Load a quarantined message, list its sender first if asked, and audit."""
        message = await self._quarantined(session, caller, message_id, within)
        detail = ""
        if list_sender is not None:
            detail = await self._list_sender(session, caller, message, list_sender)
        await audit.record(
            session,
            caller.actor,
            action,
            domain_id=message.domain_id,
            message_id=message.id,
            detail=detail,
        )
        return message

    async def _quarantined(
        self, session: AsyncSession, caller: Caller, message_id: str, within: str | None
    ) -> Message:
        message = await self._load(session, caller, message_id, within, lock=True)
        if message.state != MessageState.QUARANTINED:
            raise Conflict(f"message {message_id} is {message.state}, not quarantined")
        return message

    @staticmethod
    async def _load(
        session: AsyncSession,
        caller: Caller,
        message_id: str,
        within: str | None = None,
        *,
        lock: bool = False,
    ) -> Message:
        query = _visible(caller, within).where(Message.id == message_id)
        if lock:
            query = query.with_for_update(of=Message)
        message: Message | None = await session.scalar(query)
        if message is None:
            raise NotFound(f"message {message_id} does not exist")
        return message


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} day" + ("" if days == 1 else "s")


def _kept(keys: list[str | None]) -> list[str]:
    return [key for key in keys if key is not None]
