"""Protected addresses ("users" in the API) and the protected-address limit."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.intake_repo import room_left
from mailmoat.db.tables import Domain, DomainAdmin, Recipient, Subscription
from mailmoat.domain.lists import ListAction
from mailmoat.domain.names import InvalidName, parse_email
from mailmoat.services.caller import Caller
from mailmoat.services.domains import load_domain
from mailmoat.services.errors import Forbidden, InvalidInput, NotFound
from mailmoat.services.lists import ListItemView, Scope, add_entry, parse_item


class FilterMode(enum.StrEnum):
    TRUE = "true"
    FALSE = "false"
    COMPUTE = "compute"


@dataclass(frozen=True, slots=True)
class RecipientView:
    email: str
    admin: bool
    filter: bool


@dataclass(frozen=True, slots=True)
class PutUserResult:
    recipient: RecipientView
    list_entries: list[ListItemView] = field(default_factory=list)
    created: bool = True


async def filtered_count(session: AsyncSession, subscription_id: str) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Recipient)
            .where(Recipient.subscription_id == subscription_id, Recipient.filter.is_(True))
        )
        or 0
    )


async def has_room(session: AsyncSession, subscription: Subscription) -> bool:
    limit = subscription.protected_address_limit
    return limit is None or room_left(limit, await filtered_count(session, subscription.id))


class UserService:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def put(
        self,
        caller: Caller,
        raw_email: str,
        *,
        admin: bool,
        filter_mode: FilterMode = FilterMode.COMPUTE,
        safelist: list[str] | None = None,
        blocklist: list[str] | None = None,
    ) -> PutUserResult:
        try:
            email = parse_email(raw_email)
        except InvalidName as exc:
            raise InvalidInput(str(exc)) from None
        entries = [(ListAction.SAFELIST, parse_item(i)) for i in safelist or []]
        entries += [(ListAction.BLOCKLIST, parse_item(i)) for i in blocklist or []]
        async with self.db.write() as session:
            try:
                domain = await load_domain(session, caller, email.domain.ascii)
            except NotFound:
                raise Forbidden(
                    f"{email.domain.unicode} is not a domain provisioned by this customer"
                ) from None
            existing = await session.scalar(select(Recipient).where(Recipient.email == email.ascii))
            if existing is not None:
                return PutUserResult(await self._view(session, existing, domain), [], created=False)
            # Locked so that concurrent requests cannot both take the last free place.
            subscription = await session.scalar(
                select(Subscription)
                .where(Subscription.id == domain.subscription_id)
                .with_for_update()
            )
            assert subscription is not None
            filtered = filter_mode != FilterMode.FALSE
            if filtered and not await has_room(session, subscription):
                if filter_mode == FilterMode.TRUE:
                    raise Forbidden(
                        f"the protected-address limit of {subscription.protected_address_limit} "
                        f"of subscription {subscription.handle!r} is reached"
                    )
                filtered = False
            recipient = Recipient(
                customer_id=caller.customer_id,
                subscription_id=subscription.id,
                domain_id=domain.id,
                email=email.ascii,
                filter=filtered,
            )
            try:
                async with session.begin_nested():
                    session.add(recipient)
            except IntegrityError:
                # A concurrent request created the same address first (PostgreSQL).
                existing = await session.scalar(
                    select(Recipient).where(Recipient.email == email.ascii)
                )
                if existing is None:
                    raise
                return PutUserResult(await self._view(session, existing, domain), [], created=False)
            if admin and not await session.scalar(
                select(DomainAdmin.id).where(
                    DomainAdmin.domain_id == domain.id, DomainAdmin.email == email.ascii
                )
            ):
                session.add(DomainAdmin(domain_id=domain.id, email=email.ascii))
            await session.flush()
            scope = Scope(f"user:{recipient.id}", domain.id, recipient.id)
            added = [await add_entry(session, caller, scope, a, v) for a, v in entries]
            return PutUserResult(await self._view(session, recipient, domain), added)

    @staticmethod
    async def _view(session: AsyncSession, recipient: Recipient, domain: Domain) -> RecipientView:
        admin = await session.scalar(
            select(DomainAdmin.id).where(
                DomainAdmin.domain_id == domain.id, DomainAdmin.email == recipient.email
            )
        )
        return RecipientView(recipient.email, admin is not None, recipient.filter)


async def create_on_arrival(
    session: AsyncSession,
    *,
    customer_id: str,
    subscription_id: str,
    domain_id: str,
    email: str,
) -> Recipient:
    """The user record for an address whose first mail is being accepted, before
    anyone provisioned it (intake screens the address as this user at RCPT).

    Such users are filtered while the subscription's protected-address limit has
    room (first come, first served) and delivered unfiltered beyond it.
    """
    existing = await session.scalar(select(Recipient).where(Recipient.email == email))
    if existing is not None:
        return existing
    subscription = await session.scalar(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    )
    assert subscription is not None
    recipient = Recipient(
        customer_id=customer_id,
        subscription_id=subscription_id,
        domain_id=domain_id,
        email=email,
        filter=await has_room(session, subscription),
    )
    try:
        async with session.begin_nested():
            session.add(recipient)
    except IntegrityError:
        # Another session created it first (PostgreSQL).
        existing = await session.scalar(select(Recipient).where(Recipient.email == email))
        if existing is None:
            raise
        return existing
    return recipient
