"""The delivery queue in the database: claiming due rows and recording outcomes.

Claims are leases. A worker takes due rows and moves their ``due_at`` to the end
of its lease in one transaction: on PostgreSQL the rows are picked with
``FOR UPDATE SKIP LOCKED``, so that workers on several nodes never take the same
row; on SQLite the write transaction (``BEGIN IMMEDIATE``) already excludes every
other writer. A worker that dies leaves its rows to become due again when the
lease ends, so mail is delivered at least once, never lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.message_rows import (
    INSERT_ATTEMPTS,
    NewMessage,
    insert_sync,
    message_rows,
    queue_row,
)
from mailmoat.db.tables import (
    Delivery,
    DeliveryAttempt,
    DownstreamAddress,
    Message,
    MessageRecipient,
)
from mailmoat.domain import downstream
from mailmoat.domain.states import MessageState, RecipientStatus

Key = tuple[str, str]  # (message id, route)
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed queue row with what delivering it needs."""

    message_id: str
    route: str
    attempts: int  # made before this one
    queued_at: datetime
    customer_id: str
    domain_id: str | None
    domain_name: str
    mail_from: str
    received_at: datetime
    spool_key: str | None
    recipients: tuple[str, ...]  # those still waiting for delivery
    related_id: str | None
    failed_before: int  # recipients refused for good by earlier attempts
    data: bytes | None = None  # the content, when handed over in memory by intake
    address_id: str | None = None  # the webhook address, for the http route

    @property
    def key(self) -> Key:
        return (self.message_id, self.route)


@dataclass(frozen=True, slots=True)
class Claimed:
    jobs: list[Job]
    downstreams: dict[str, list[downstream.DownstreamAddress]]  # by domain id


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    at: datetime
    target: str
    outcome: str  # delivered, deferred, failed or unreachable
    reply: str
    recipients: Sequence[str]
    http_status: int | None = None  # webhook attempts: the HTTP status, if one came
    response: str | None = None  # and the start of a failing answer's body


@dataclass(slots=True)
class Outcome:
    """What one delivery attempt changed."""

    job: Job
    attempts: list[AttemptRecord]
    final: dict[str, tuple[str, str]]  # address -> (RecipientStatus, reply), now settled
    retry_at: datetime | None  # when recipients remain pending
    last_reply: str
    message_state: str
    dsn: NewMessage | None = None


def claim(
    conn: Connection,
    owner: str,
    limit: int,
    lease: timedelta,
    now: datetime,
    *,
    busy: Sequence[Key] = (),
) -> Claimed:
    """Lease up to ``limit`` due rows to ``owner``, the longest waiting first.

    ``busy`` are rows the owner is still working on: even when their lease ran out
    (renewals failed), the owner must not start them a second time. Runs in a write
    transaction (see db/group_commit.py).
    """
    query = (
        select(Delivery.message_id, Delivery.route)
        .where(Delivery.due_at <= now)
        .order_by(Delivery.due_at)
        .limit(limit)
    )
    if busy:
        query = query.where(tuple_(Delivery.message_id, Delivery.route).not_in(list(busy)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    keys: list[Key] = [(m, r) for m, r in conn.execute(query).all()]
    if not keys:
        return Claimed([], {})
    conn.execute(
        update(Delivery)
        .where(tuple_(Delivery.message_id, Delivery.route).in_(keys))
        .values(lease_owner=owner, due_at=now + lease)
    )
    return _jobs(conn, keys)


def _jobs(conn: Connection, keys: Sequence[Key]) -> Claimed:
    found = conn.execute(
        select(
            Delivery.message_id,
            Delivery.route,
            Delivery.attempts,
            Delivery.queued_at,
            Message.customer_id,
            Message.domain_id,
            Message.domain_name,
            Message.mail_from,
            Message.received_at,
            Message.spool_key,
            Message.related_id,
            Message.address_id,
        )
        .join(Message, Message.id == Delivery.message_id)
        .where(tuple_(Delivery.message_id, Delivery.route).in_(keys))
    ).all()
    ids = [row.message_id for row in found]
    pending: dict[str, list[str]] = defaultdict(list)
    failed: dict[str, int] = defaultdict(int)
    recipients = conn.execute(
        select(
            MessageRecipient.message_id,
            MessageRecipient.address,
            MessageRecipient.delivery_status,
        )
        .where(
            MessageRecipient.message_id.in_(ids),
            or_(
                MessageRecipient.delivery_status.is_(None),
                MessageRecipient.delivery_status == RecipientStatus.FAILED,
            ),
        )
        .order_by(MessageRecipient.id)
    )
    for message_id, address, status in recipients:
        if status is None:
            pending[message_id].append(address)
        else:
            failed[message_id] += 1
    jobs = [
        Job(
            message_id=row.message_id,
            route=row.route,
            attempts=row.attempts,
            queued_at=row.queued_at,
            customer_id=row.customer_id,
            domain_id=row.domain_id,
            domain_name=row.domain_name,
            mail_from=row.mail_from,
            received_at=row.received_at,
            spool_key=row.spool_key,
            recipients=tuple(pending[row.message_id]),
            related_id=row.related_id,
            failed_before=failed[row.message_id],
            address_id=row.address_id,
        )
        for row in found
    ]
    domain_ids = {j.domain_id for j in jobs if j.domain_id is not None}
    return Claimed(jobs, downstreams(conn, domain_ids))


def downstreams(
    conn: Connection, domain_ids: Iterable[str]
) -> dict[str, list[downstream.DownstreamAddress]]:
    """The downstream addresses of these domains, in their configured order."""
    found: dict[str, list[downstream.DownstreamAddress]] = defaultdict(list)
    wanted = list(domain_ids)
    if not wanted:
        return {}
    rows = conn.execute(
        select(
            DownstreamAddress.domain_id,
            DownstreamAddress.priority,
            DownstreamAddress.weight,
            DownstreamAddress.port,
            DownstreamAddress.target,
        )
        .where(DownstreamAddress.domain_id.in_(wanted))
        .order_by(DownstreamAddress.domain_id, DownstreamAddress.position)
    )
    for domain_id, priority, weight, port, target in rows:
        found[domain_id].append(downstream.DownstreamAddress(priority, weight, port, target))
    return dict(found)


def renew(conn: Connection, owner: str, keys: Sequence[Key], until: datetime) -> None:
    """Extend the lease on rows still being worked on."""
    _set_lease(conn, owner, keys, owner=owner, due=until)


def release(conn: Connection, owner: str, keys: Sequence[Key], now: datetime) -> None:
    """Give back rows ``owner`` holds but has not started: due at once for anyone."""
    _set_lease(conn, owner, keys, owner=None, due=now)


def _set_lease(
    conn: Connection, holder: str, keys: Sequence[Key], *, owner: str | None, due: datetime
) -> None:
    for start in range(0, len(keys), CHUNK):
        conn.execute(
            update(Delivery)
            .where(
                tuple_(Delivery.message_id, Delivery.route).in_(keys[start : start + CHUNK]),
                Delivery.lease_owner == holder,
            )
            .values(lease_owner=owner, due_at=due)
        )


def complete(
    conn: Connection, owner: str, outcomes: Sequence[Outcome], now: datetime
) -> list[bool]:
    """Record the outcomes of attempts, in a few statements for all of them.

    An outcome whose row is no longer leased to ``owner`` (the lease ran out and
    another worker took the message) only adds its attempts to the log: the other
    worker now decides the message's fate. Returns, per outcome, whether it applied.
    """
    held = _held(conn, owner, [o.job.key for o in outcomes])
    applied = [o.job.key in held for o in outcomes]
    mine = [o for o, ok in zip(outcomes, applied, strict=True) if ok]
    _settle_rows(conn, mine)
    _record_attempts(conn, outcomes)
    _record_outcomes(conn, mine, now)
    return applied


def complete_merged(conn: Connection, payloads: list[tuple[str, Outcome, datetime]]) -> list[bool]:
    """``complete`` for the outcomes of many attempts (see GroupCommit.run_merged)."""
    applied: dict[int, bool] = {}
    owners: dict[str, list[int]] = defaultdict(list)
    for index, (owner, _, _) in enumerate(payloads):
        owners[owner].append(index)
    for owner, indexes in owners.items():
        now = max(payloads[i][2] for i in indexes)
        done = complete(conn, owner, [payloads[i][1] for i in indexes], now)
        applied.update(zip(indexes, done, strict=True))
    return [applied[i] for i in range(len(payloads))]


def _by_route(keys: Iterable[Key]) -> dict[str, list[str]]:
    """Keys grouped by route: a plain IN on message ids is cheaper than a row-value IN."""
    routes: dict[str, list[str]] = defaultdict(list)
    for message_id, route in keys:
        routes[route].append(message_id)
    return routes


def _held(conn: Connection, owner: str, keys: Sequence[Key]) -> set[Key]:
    """The rows among ``keys`` still leased to ``owner``, locked until the commit."""
    held: set[Key] = set()
    for route, ids in _by_route(keys).items():
        for start in range(0, len(ids), CHUNK):
            rows = conn.execute(
                _HELD, {"route": route, "ids": ids[start : start + CHUNK], "owner": owner}
            )
            held.update((m, route) for m in rows.scalars())
    return held


# The statements of recording outcomes, built once (see message_rows).
_HELD = (
    select(Delivery.message_id)
    .where(
        Delivery.route == bindparam("route"),
        Delivery.message_id.in_(bindparam("ids", expanding=True)),
        Delivery.lease_owner == bindparam("owner"),
    )
    .with_for_update()
)
_DELETE_SETTLED = delete(Delivery).where(
    Delivery.route == bindparam("route"),
    Delivery.message_id.in_(bindparam("ids", expanding=True)),
)
_DEFER = (
    update(Delivery)
    .where(Delivery.message_id == bindparam("m"), Delivery.route == bindparam("r"))
    .values(
        state=MessageState.DEFERRED,
        attempts=bindparam("attempts"),
        due_at=bindparam("due"),
        lease_owner=None,
        last_reply=bindparam("last"),
    )
)
_SETTLE_RECIPIENTS = (
    update(MessageRecipient)
    .where(
        MessageRecipient.message_id == bindparam("m"),
        MessageRecipient.address == bindparam("a"),
    )
    .values(delivery_status=bindparam("status"), delivery_reply=bindparam("reply"))
)
_SET_STATES = (
    update(Message)
    .where(Message.id == bindparam("m"))
    .values(state=bindparam("state"), state_changed_at=bindparam("now"))
)


def _settle_rows(conn: Connection, outcomes: Sequence[Outcome]) -> None:
    done = _by_route(o.job.key for o in outcomes if o.retry_at is None)
    for route, ids in done.items():
        for start in range(0, len(ids), CHUNK):
            conn.execute(_DELETE_SETTLED, {"route": route, "ids": ids[start : start + CHUNK]})
    waiting = [
        {
            "m": o.job.message_id,
            "r": o.job.route,
            "attempts": o.job.attempts + 1,
            "due": o.retry_at,
            "last": o.last_reply[:512],
        }
        for o in outcomes
        if o.retry_at is not None
    ]
    if waiting:
        conn.execute(_DEFER, waiting)


def _record_attempts(conn: Connection, outcomes: Sequence[Outcome]) -> None:
    rows = [
        {
            "message_id": o.job.message_id,
            "attempted_at": a.at,
            "route": o.job.route,
            "target": a.target[:320],
            "outcome": a.outcome,
            "reply": a.reply[:512],
            "recipients": list(a.recipients),
            "http_status": a.http_status,
            "response": a.response,
        }
        for o in outcomes
        for a in o.attempts
    ]
    if rows:
        conn.execute(INSERT_ATTEMPTS, rows)


def _record_outcomes(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    settled = [
        {"m": o.job.message_id, "a": address, "status": status, "reply": reply[:512]}
        for o in outcomes
        for address, (status, reply) in o.final.items()
    ]
    if settled:
        conn.execute(_SETTLE_RECIPIENTS, settled)
    states = [{"m": o.job.message_id, "state": o.message_state, "now": now} for o in outcomes]
    if states:
        conn.execute(_SET_STATES, states)
    dsns = [o.dsn for o in outcomes if o.dsn is not None]
    if dsns:
        insert_sync(conn, message_rows(dsns))


async def enqueue(session: AsyncSession, message_id: str, route: str, now: datetime) -> None:
    """Put a message (back) in the queue, due at once, for its pending recipients."""
    await session.execute(insert(Delivery), [queue_row(message_id, route, now)])


async def reset_recipients(session: AsyncSession, message_id: str) -> None:
    """Make a message's undelivered recipients pending again; all of them if none is."""
    undelivered = await session.scalar(
        select(func.count()).where(
            MessageRecipient.message_id == message_id,
            or_(
                MessageRecipient.delivery_status.is_(None),
                MessageRecipient.delivery_status != RecipientStatus.DELIVERED,
            ),
        )
    )
    query = update(MessageRecipient).where(MessageRecipient.message_id == message_id)
    if undelivered:
        query = query.where(MessageRecipient.delivery_status != RecipientStatus.DELIVERED)
    await session.execute(query.values(delivery_status=None, delivery_reply=None))


async def attempts_of(
    session: AsyncSession, message_ids: Sequence[str]
) -> dict[str, list[DeliveryAttempt]]:
    found: dict[str, list[DeliveryAttempt]] = defaultdict(list)
    if message_ids:
        rows = await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.message_id.in_(message_ids))
            .order_by(DeliveryAttempt.id)
        )
        for row in rows:
            found[row.message_id].append(row)
    return found


async def queued_of(session: AsyncSession, message_ids: Sequence[str]) -> dict[str, Delivery]:
    """The queue rows of these messages (SMTP route), for showing the next attempt."""
    if not message_ids:
        return {}
    rows = await session.scalars(select(Delivery).where(Delivery.message_id.in_(message_ids)))
    return {row.message_id: row for row in rows}


IN_FLIGHT = "in flight"
DROPPED_REPLY = "554 5.0.0 removed from the queue by the operator"


@dataclass(frozen=True, slots=True)
class DepthRow:
    domain: str
    state: str  # queued, deferred or "in flight"
    count: int
    oldest: datetime


async def depth(session: AsyncSession, now: datetime) -> list[DepthRow]:
    """How many messages wait, by domain and state, with the oldest arrival."""
    state = case(
        (and_(Delivery.lease_owner.is_not(None), Delivery.due_at > now), IN_FLIGHT),
        else_=Delivery.state,
    ).label("state")
    rows = await session.execute(
        select(Message.domain_name, state, func.count(), func.min(Delivery.queued_at))
        .join(Message, Message.id == Delivery.message_id)
        .group_by(Message.domain_name, state)
        .order_by(Message.domain_name, state)
    )
    return [DepthRow(domain, st, int(count), oldest) for domain, st, count, oldest in rows]


async def waiting(
    session: AsyncSession,
    now: datetime,
    *,
    message_ids: Sequence[str] = (),
    domain: str | None = None,
) -> list[Key]:
    """Queue rows not in flight, of the given messages or domain (all when neither)."""
    query = (
        select(Delivery.message_id, Delivery.route)
        .join(Message, Message.id == Delivery.message_id)
        .where(or_(Delivery.lease_owner.is_(None), Delivery.due_at <= now))
        .order_by(Delivery.due_at)
    )
    if message_ids:
        query = query.where(Delivery.message_id.in_(list(message_ids)))
    if domain is not None:
        query = query.where(Message.domain_name == domain)
    return [(m, r) for m, r in (await session.execute(query)).all()]


def _idle(keys: Sequence[Key], now: datetime) -> Any:
    return and_(
        tuple_(Delivery.message_id, Delivery.route).in_(list(keys)),
        or_(Delivery.lease_owner.is_(None), Delivery.due_at <= now),
    )


async def retry_now(session: AsyncSession, keys: Sequence[Key], now: datetime) -> int:
    """Make waiting rows due at once; rows a worker holds are left alone."""
    result = await session.execute(
        update(Delivery).where(_idle(keys, now)).values(due_at=now, lease_owner=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def drop(session: AsyncSession, keys: Sequence[Key], now: datetime) -> int:
    """Take waiting rows out of the queue for good: their messages become failed."""
    ids = [
        m
        for (m,) in await session.execute(
            select(Delivery.message_id).where(_idle(keys, now)).with_for_update()
        )
    ]
    if not ids:
        return 0
    await session.execute(delete(Delivery).where(Delivery.message_id.in_(ids)))
    await session.execute(
        update(MessageRecipient)
        .where(MessageRecipient.message_id.in_(ids), MessageRecipient.delivery_status.is_(None))
        .values(delivery_status=RecipientStatus.FAILED, delivery_reply=DROPPED_REPLY)
    )
    await session.execute(
        update(Message)
        .where(Message.id.in_(ids))
        .values(state=MessageState.FAILED, state_changed_at=now)
    )
    return len(ids)


KeyOperation = Callable[[AsyncSession, Sequence[Key], datetime], Awaitable[int]]


async def kept_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    """The spool keys among ``keys`` that a message record still refers to."""
    found: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        rows = await session.scalars(
            select(Message.spool_key).where(Message.spool_key.in_(keys[start : start + CHUNK]))
        )
        found.update(k for k in rows if k is not None)
    return found


async def any_due(db: Database, now: datetime) -> bool:
    """Whether some row is due: a read, so idle workers poll without taking the write lock."""
    async with db.read() as session:
        query = select(Delivery.message_id).where(Delivery.due_at <= now).limit(1)
        found = await session.scalar(query)
    return found is not None


async def downstreams_of(
    db: Database, domain_ids: Iterable[str]
) -> dict[str, list[downstream.DownstreamAddress]]:
    async with db.read() as session:
        conn = await session.connection()
        return await conn.run_sync(downstreams, list(domain_ids))
