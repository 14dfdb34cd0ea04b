"""Customers, their subscriptions, and the first-start bootstrap."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.tables import Customer, Domain, Subscription
from mailmoat.services.errors import Conflict, InvalidInput, NotFound

_HANDLE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
DEFAULT_HANDLE = "default"


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    handle: str
    active: bool
    plan_handle: str
    plan_name: str
    domain_limit: int | None
    protected_address_limit: int | None
    domain_count: int


@dataclass(frozen=True, slots=True)
class CustomerView:
    id: str
    handle: str
    subscriptions: list[SubscriptionView]


def validate_handle(handle: str) -> str:
    if not _HANDLE.match(handle):
        raise InvalidInput(
            f"invalid handle {handle!r}: use 1-128 lower-case letters, digits, '.', '_' or '-'"
        )
    return handle


def _validate_limit(name: str, value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 2_000_000_000:
        raise InvalidInput(f"{name} must be between 0 and 2000000000")
    return value


class CustomerService:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def create(
        self,
        handle: str,
        *,
        subscription_handle: str | None = None,
        domain_limit: int | None = None,
        protected_address_limit: int | None = None,
    ) -> CustomerView:
        validate_handle(handle)
        sub_handle = validate_handle(subscription_handle or handle)
        _validate_limit("domain limit", domain_limit)
        _validate_limit("protected-address limit", protected_address_limit)
        async with self.db.write() as session:
            if await session.scalar(select(Customer.id).where(Customer.handle == handle)):
                raise Conflict(f"customer {handle!r} already exists")
            if await session.scalar(
                select(Subscription.id).where(Subscription.handle == sub_handle)
            ):
                raise Conflict(f"subscription {sub_handle!r} already exists")
            customer = Customer(handle=handle)
            session.add(customer)
            await session.flush()
            session.add(
                Subscription(
                    customer_id=customer.id,
                    handle=sub_handle,
                    domain_limit=domain_limit,
                    protected_address_limit=protected_address_limit,
                )
            )
            customer_id = customer.id
        return await self.get(customer_id)

    async def get(self, customer_id: str) -> CustomerView:
        async with self.db.read() as session:
            customer = await session.get(Customer, customer_id)
            if customer is None:
                raise NotFound("customer not found")
            return CustomerView(
                id=customer.id,
                handle=customer.handle,
                subscriptions=await self._subscriptions(session, customer.id),
            )

    async def get_by_handle(self, handle: str) -> CustomerView:
        async with self.db.read() as session:
            customer_id = await session.scalar(select(Customer.id).where(Customer.handle == handle))
        if customer_id is None:
            raise NotFound(f"customer {handle!r} not found")
        return await self.get(customer_id)

    async def all(self) -> list[CustomerView]:
        async with self.db.read() as session:
            customers = (await session.scalars(select(Customer).order_by(Customer.handle))).all()
            return [
                CustomerView(c.id, c.handle, await self._subscriptions(session, c.id))
                for c in customers
            ]

    async def subscriptions(self, customer_id: str) -> list[SubscriptionView]:
        async with self.db.read() as session:
            return await self._subscriptions(session, customer_id)

    async def is_empty(self) -> bool:
        async with self.db.read() as session:
            return (await session.scalar(select(func.count()).select_from(Customer))) == 0

    @staticmethod
    async def _subscriptions(session: AsyncSession, customer_id: str) -> list[SubscriptionView]:
        counts = (
            select(Domain.subscription_id, func.count().label("n"))
            .group_by(Domain.subscription_id)
            .subquery()
        )
        rows = (
            await session.execute(
                select(Subscription, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.subscription_id == Subscription.id)
                .where(Subscription.customer_id == customer_id)
                .order_by(Subscription.handle)
            )
        ).all()
        return [
            SubscriptionView(
                handle=s.handle,
                active=s.active,
                plan_handle=s.plan_handle,
                plan_name=s.plan_name,
                domain_limit=s.domain_limit,
                protected_address_limit=s.protected_address_limit,
                domain_count=int(n),
            )
            for s, n in rows
        ]
