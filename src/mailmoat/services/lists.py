"""Safelists and blocklists at the three tiers: account, domain and user."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.tables import ListEntry, Recipient
from mailmoat.domain.lists import ListAction, ListItemValue, parse_list_item
from mailmoat.domain.names import InvalidName, parse_email
from mailmoat.services import audit
from mailmoat.services.caller import Caller
from mailmoat.services.domains import load_domain
from mailmoat.services.errors import InvalidInput, NotFound


@dataclass(frozen=True, slots=True)
class ListItemView:
    item: str
    item_type: str
    action: str


@dataclass(frozen=True, slots=True)
class Scope:
    key: str
    domain_id: str | None = None
    recipient_id: str | None = None


ACCOUNT = Scope("account")


def parse_item(raw: str) -> ListItemValue:
    try:
        return parse_list_item(raw)
    except InvalidName as exc:
        raise InvalidInput(str(exc)) from None


def _view(entry: ListEntry) -> ListItemView:
    return ListItemView(entry.item, entry.item_type, entry.action)


async def add_entry(
    session: AsyncSession, caller: Caller, scope: Scope, action: ListAction, value: ListItemValue
) -> ListItemView:
    """Add an item; adding one that is already there is not an error."""
    same = select(ListEntry).where(
        ListEntry.customer_id == caller.customer_id,
        ListEntry.scope == scope.key,
        ListEntry.action == action.value,
        ListEntry.item == value.item,
    )
    existing = await session.scalar(same)
    if existing is not None:
        return _view(existing)
    entry = ListEntry(
        customer_id=caller.customer_id,
        domain_id=scope.domain_id,
        recipient_id=scope.recipient_id,
        scope=scope.key,
        action=action.value,
        item=value.item,
        item_type=value.item_type.value,
    )
    try:
        async with session.begin_nested():
            session.add(entry)
    except IntegrityError:
        # A concurrent request added the same item first (PostgreSQL).
        existing = await session.scalar(same)
        if existing is None:
            raise
        return _view(existing)
    return _view(entry)


class ListService:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def _scope(
        self, session: AsyncSession, caller: Caller, domain: str | None, user: str | None
    ) -> Scope:
        if user is not None:
            try:
                email = parse_email(user)
            except InvalidName as exc:
                raise InvalidInput(str(exc)) from None
            owner = await load_domain(session, caller, email.domain.ascii)
            recipient = await session.scalar(
                select(Recipient).where(Recipient.email == email.ascii)
            )
            if recipient is None or recipient.customer_id != caller.customer_id:
                raise NotFound(f"recipient {email.ascii} does not exist")
            return Scope(f"user:{recipient.id}", owner.id, recipient.id)
        if domain is not None:
            owner = await load_domain(session, caller, domain)
            return Scope(f"domain:{owner.id}", owner.id)
        return ACCOUNT

    async def entries(
        self,
        caller: Caller,
        action: ListAction,
        *,
        domain: str | None = None,
        user: str | None = None,
    ) -> list[ListItemView]:
        async with self.db.read() as session:
            scope = await self._scope(session, caller, domain, user)
            rows = await session.scalars(
                select(ListEntry)
                .where(
                    ListEntry.customer_id == caller.customer_id,
                    ListEntry.scope == scope.key,
                    ListEntry.action == action.value,
                )
                .order_by(ListEntry.created_at, ListEntry.item)
            )
            return [_view(r) for r in rows]

    async def add(
        self,
        caller: Caller,
        action: ListAction,
        raw_item: str,
        *,
        domain: str | None = None,
        user: str | None = None,
    ) -> ListItemView:
        value = parse_item(raw_item)
        async with self.db.write() as session:
            scope = await self._scope(session, caller, domain, user)
            added = await add_entry(session, caller, scope, action, value)
            await audit.record(
                session,
                caller.actor,
                f"added to {_list_name(action, user)}",
                domain_id=scope.domain_id,
                detail=value.item,
            )
            return added

    async def remove(
        self,
        caller: Caller,
        action: ListAction,
        raw_item: str,
        *,
        domain: str | None = None,
        user: str | None = None,
    ) -> None:
        """Remove an item; removing one that is not there is not an error."""
        try:
            item = parse_list_item(raw_item).item
        except InvalidName:
            item = raw_item.strip()
        async with self.db.write() as session:
            scope = await self._scope(session, caller, domain, user)
            removed = await session.execute(
                delete(ListEntry).where(
                    ListEntry.customer_id == caller.customer_id,
                    ListEntry.scope == scope.key,
                    ListEntry.action == action.value,
                    ListEntry.item == item,
                )
            )
            if removed.rowcount:  # type: ignore[attr-defined]
                await audit.record(
                    session,
                    caller.actor,
                    f"removed from {_list_name(action, user)}",
                    domain_id=scope.domain_id,
                    detail=item,
                )


def _list_name(action: ListAction, user: str | None) -> str:
    return f"{action.value} of {user}" if user else action.value
