"""New message log records as rows: what intake and the delivery queue insert."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, update

from mailmoat.db.tables import (
    Delivery,
    DeliveryAttempt,
    Message,
    MessageContent,
    MessageRecipient,
)
from mailmoat.domain.states import MessageState

ROUTE_SMTP = "smtp"  # to the domain's downstream addresses
ROUTE_DSN = "dsn"  # a delivery status notification, to the original sender's domain
ROUTE_HTTP = "http"  # a POST to the webhook of the message's address


# Ids need to be unique, not secret (every read of a record checks who asks): a
# generator seeded once from the system is much cheaper than a system call each.
_ids = random.Random(secrets.randbits(128))


def new_message_id() -> str:
    """32 hex digits that sort by arrival time (microseconds, then randomness)."""
    return f"{time.time_ns() // 1000:014x}{_ids.getrandbits(72):018x}"


@dataclass(slots=True)
class NewMessage:
    """One message log record, with its bytes when they are to be kept."""

    id: str
    customer_id: str
    domain_id: str | None
    domain_name: str
    received_at: datetime
    client_ip: str
    client_helo: str
    mail_from: str
    recipients: Sequence[tuple[str, str | None]]
    verdict: str
    action: str
    reason: str
    state: str
    reply: str
    size: int = 0
    message_id_header: str | None = None
    subject: str | None = None
    score: float | None = None
    rules: list[dict[str, object]] = field(default_factory=list)
    auth_results: str | None = None
    data: bytes | None = None
    related_id: str | None = None
    route: str = ROUTE_SMTP
    address_id: str | None = None  # mail to a webhook address
    # Settled already (a webhook answered during the SMTP transaction): the
    # recipients' status and reply, and the attempts as delivery_attempts rows.
    recipient_status: str | None = None
    recipient_reply: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MessageRows:
    messages: list[Row]
    recipients: list[Row]
    deliveries: list[Row]
    attempts: list[Row] = field(default_factory=list)
    contents: list[Row] = field(default_factory=list)  # bytes kept in the database


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


@dataclass(frozen=True, slots=True)
class Lease:
    """Queue rows created already taken by a worker of this process (see intake)."""

    owner: str
    until: datetime


def queue_row(message_id: str, route: str, now: datetime, lease: Lease | None = None) -> Row:
    """A delivery queue row: due at once, or leased to a worker that has it already."""
    return {
        "message_id": message_id,
        "route": route,
        "state": MessageState.QUEUED,
        "attempts": 0,
        "queued_at": now,
        "due_at": now if lease is None else lease.until,
        "lease_owner": None if lease is None else lease.owner,
        "last_reply": "",
    }


def is_queued(message: NewMessage) -> bool:
    return message.state == MessageState.QUEUED and message.data is not None


def message_rows(
    messages: Sequence[NewMessage],
    lease: Lease | None = None,
    inline: Callable[[bytes], bool] = lambda _: False,
) -> MessageRows:
    """The rows of new records; queued ones also get their place in the queue, and
    those whose bytes ``inline`` says to keep in the database get a content row."""
    rows = [
        {
            "id": m.id,
            "customer_id": m.customer_id,
            "domain_id": m.domain_id,
            "domain_name": m.domain_name,
            "received_at": m.received_at,
            "client_ip": m.client_ip[:45],
            "client_helo": m.client_helo[:255],
            "mail_from": m.mail_from[:320],
            "size": m.size,
            "message_id_header": _clip(m.message_id_header, 998),
            "subject": _clip(m.subject, 998),
            "verdict": m.verdict,
            "action": m.action,
            "reason": m.reason,
            "score": m.score,
            "rules": m.rules,
            "auth_results": m.auth_results,
            "state": m.state,
            "reply": m.reply[:512],
            "spool_key": m.id if m.data is not None else None,
            "state_changed_at": m.received_at,
            "related_id": m.related_id,
            "address_id": m.address_id,
        }
        for m in messages
    ]
    recipients = [
        {
            "message_id": m.id,
            "address": address[:320],
            "recipient_id": recipient_id,
            "delivery_status": m.recipient_status,
            "delivery_reply": _clip(m.recipient_reply, 512),
        }
        for m in messages
        for address, recipient_id in m.recipients
    ]
    deliveries = [queue_row(m.id, m.route, m.received_at, lease) for m in messages if is_queued(m)]
    attempts = [{"message_id": m.id, **a} for m in messages for a in m.attempts]
    contents = [
        {"message_id": m.id, "data": m.data}
        for m in messages
        if m.data is not None and inline(m.data)
    ]
    return MessageRows(rows, recipients, deliveries, attempts, contents)


# Built once: a statement object caches its compiled form's key, and building one
# costs more than running it for a few rows.
_INSERT_MESSAGES = insert(Message)
_INSERT_RECIPIENTS = insert(MessageRecipient)
_INSERT_DELIVERIES = insert(Delivery)
INSERT_ATTEMPTS = insert(DeliveryAttempt)
_INSERT_CONTENTS = insert(MessageContent)


def insert_sync(conn: Connection, rows: MessageRows) -> None:
    conn.execute(_INSERT_MESSAGES, rows.messages)
    if rows.recipients:
        conn.execute(_INSERT_RECIPIENTS, rows.recipients)
    if rows.deliveries:
        conn.execute(_INSERT_DELIVERIES, rows.deliveries)
    if rows.attempts:
        conn.execute(INSERT_ATTEMPTS, rows.attempts)
    if rows.contents:
        conn.execute(_INSERT_CONTENTS, rows.contents)


def settle(conn: Connection, message: NewMessage) -> None:
    """Record what became of a message already inserted: its state, reason and reply,
    its recipients' status, and its attempts."""
    conn.execute(
        update(Message)
        .where(Message.id == message.id)
        .values(
            state=message.state,
            reason=message.reason,
            reply=message.reply[:512],
            state_changed_at=datetime.now(UTC),
        )
    )
    if message.recipient_status is not None:
        conn.execute(
            update(MessageRecipient)
            .where(MessageRecipient.message_id == message.id)
            .values(
                delivery_status=message.recipient_status,
                delivery_reply=_clip(message.recipient_reply, 512),
            )
        )
    if message.attempts:
        conn.execute(
            insert(DeliveryAttempt), [{"message_id": message.id, **a} for a in message.attempts]
        )


def insert_merged(conn: Connection, parts: list[MessageRows]) -> list[None]:
    """Insert the records of many callers at once (see GroupCommit.run_merged)."""
    insert_sync(
        conn,
        MessageRows(
            [row for part in parts for row in part.messages],
            [row for part in parts for row in part.recipients],
            [row for part in parts for row in part.deliveries],
            [row for part in parts for row in part.attempts],
            [row for part in parts for row in part.contents],
        ),
    )
    return [None] * len(parts)
