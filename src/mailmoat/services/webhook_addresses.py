"""Email-to-webhook addresses and the custom domains routed to them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db.database import Database
from mailmoat.db.domains_repo import alias_owner, domain_by_name
from mailmoat.db.tables import CustomDomain, WebhookAddress, utcnow
from mailmoat.domain.addresses import AddressPolicy
from mailmoat.domain.names import InvalidName
from mailmoat.domain.webhooks import (
    DEFAULT_MAX_SIZE,
    DeliveryMode,
    TargetFormat,
    compile_pattern,
    new_address_id,
    new_address_token,
    parse_custom_domain,
    parse_target,
)
from mailmoat.services.caller import Caller
from mailmoat.services.errors import Conflict, InvalidInput, NotFound
from mailmoat.services.name_claims import CUSTOM_DOMAIN, NameClaims

MAX_PAGE = 500
MAX_ADDRESSES = 10_000  # per account
MAX_CUSTOM_DOMAINS = 10_000


@dataclass(frozen=True, slots=True)
class AddressInput:
    """Fields a client sends; None means "leave as it is" on update."""

    target: str | None = None
    target_format: str | None = None
    nickname: str | None = None
    mode: str | None = None
    max_size: int | None = None


@dataclass(frozen=True, slots=True)
class AddressView:
    id: str
    email: str
    target: str
    target_format: str
    nickname: str | None
    mode: str
    max_size: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CustomDomainView:
    id: str
    domain: str
    address_id: str
    pattern: str | None
    created_at: datetime


class WebhookAddressService:
    def __init__(
        self,
        database: Database,
        address_domain: str,
        *,
        targets: AddressPolicy | None = None,
        size_limit: int = DEFAULT_MAX_SIZE,
        claims: NameClaims,
    ) -> None:
        self.db = database
        self.address_domain = address_domain
        self.targets = targets or AddressPolicy()
        self.size_limit = size_limit
        self.claims = claims

    @property
    def allow_private_targets(self) -> bool:
        return self.targets.allow_private

    @allow_private_targets.setter
    def allow_private_targets(self, allow: bool) -> None:
        self.targets = self.targets.allowing(allow)

    # -- addresses -------------------------------------------------------------------

    def _view(self, row: WebhookAddress) -> AddressView:
        return AddressView(
            row.id,
            f"{row.token}@{self.address_domain}",
            row.target,
            row.target_format,
            row.nickname,
            row.mode,
            row.max_size,
            row.created_at,
            row.updated_at,
        )

    async def page(self, caller: Caller, limit: int, offset: int) -> tuple[list[AddressView], int]:
        _check_page(limit, offset)
        mine = WebhookAddress.customer_id == caller.customer_id
        async with self.db.read() as session:
            total = await session.scalar(select(func.count()).where(mine))
            rows = await session.scalars(
                select(WebhookAddress)
                .where(mine)
                .order_by(WebhookAddress.created_at, WebhookAddress.id)
                .limit(limit)
                .offset(offset)
            )
            return [self._view(r) for r in rows], int(total or 0)

    async def get(self, caller: Caller, address_id: str) -> AddressView:
        async with self.db.read() as session:
            return self._view(await self._load(session, caller, address_id))

    async def create(self, caller: Caller, fields: AddressInput) -> AddressView:
        if fields.target is None:
            raise InvalidInput("target is required")
        values = self._validated(fields, partial=False)
        now = utcnow()
        row = WebhookAddress(
            id=new_address_id(),
            customer_id=caller.customer_id,
            token=new_address_token(),
            created_at=now,
            updated_at=now,
            **values,
        )
        async with self.db.write() as session:
            await self._check_room(session, caller, WebhookAddress, MAX_ADDRESSES)
            session.add(row)
        return self._view(row)

    async def update(self, caller: Caller, address_id: str, fields: AddressInput) -> AddressView:
        values = self._validated(fields, partial=True)
        async with self.db.write() as session:
            row = await self._load(session, caller, address_id)
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            return self._view(row)

    async def delete(self, caller: Caller, address_id: str) -> None:
        async with self.db.write() as session:
            row = await self._load(session, caller, address_id)
            # Its custom domains go with it (ON DELETE CASCADE), and so do their names.
            names = await session.scalars(
                select(CustomDomain.name_ascii).where(CustomDomain.address_id == row.id)
            )
            await self.claims.release(session, caller.customer_id, list(names))
            await session.delete(row)

    def _validated(self, fields: AddressInput, *, partial: bool) -> dict[str, object]:
        values: dict[str, object] = {}
        try:
            if fields.target is not None:
                target = parse_target(fields.target)
                # A name is checked when it is resolved, at each post.
                refusal = self.targets.host_refusal(target.host, target.port)
                if refusal is not None:
                    raise InvalidName(f"target {target.host} is refused: {refusal}")
                values["target"] = target.url
        except InvalidName as exc:
            raise InvalidInput(str(exc)) from None
        if fields.target_format is not None or not partial:
            try:
                values["target_format"] = TargetFormat(fields.target_format or "json+n").value
            except ValueError:
                formats = ", ".join(f.value for f in TargetFormat)
                raise InvalidInput(f"target_format must be one of {formats}") from None
        if fields.mode is not None or not partial:
            try:
                values["mode"] = DeliveryMode(fields.mode or "sync").value
            except ValueError:
                raise InvalidInput("mode must be sync or queued") from None
        if fields.nickname is not None:
            nickname = fields.nickname.strip()
            if len(nickname) > 200 or any(not ch.isprintable() for ch in nickname):
                raise InvalidInput("nickname must be up to 200 printable characters")
            values["nickname"] = nickname or None
        if fields.max_size is not None or not partial:
            size = self.size_limit if fields.max_size is None else fields.max_size
            if not 1024 <= size <= self.size_limit:
                raise InvalidInput(
                    f"max_size must be between 1024 and {self.size_limit} bytes "
                    "(the gateway's own limit)"
                )
            values["max_size"] = size
        return values

    @staticmethod
    async def _load(session: AsyncSession, caller: Caller, address_id: str) -> WebhookAddress:
        row = await session.get(WebhookAddress, address_id)
        if row is None or row.customer_id != caller.customer_id:
            raise NotFound(f"address {address_id} does not exist")
        return row

    # -- custom domains --------------------------------------------------------------

    async def domains(self, caller: Caller, address_id: str | None) -> list[CustomDomainView]:
        query = select(CustomDomain).where(CustomDomain.customer_id == caller.customer_id)
        if address_id is not None:
            query = query.where(CustomDomain.address_id == address_id)
        async with self.db.read() as session:
            rows = await session.scalars(query.order_by(CustomDomain.name_ascii))
            return [_domain_view(r) for r in rows]

    async def add_domain(
        self, caller: Caller, address_id: str, raw_name: str, pattern: str | None
    ) -> CustomDomainView:
        try:
            name = parse_custom_domain(raw_name)
            compile_pattern(pattern)
        except InvalidName as exc:
            raise InvalidInput(str(exc)) from None
        self.claims.check(name.ascii, name.unicode)
        row = CustomDomain(
            id=new_address_id(),
            customer_id=caller.customer_id,
            address_id=address_id,
            name_ascii=name.ascii,
            name_unicode=name.unicode,
            pattern=pattern or None,
            created_at=utcnow(),
        )
        try:
            async with self.db.write() as session:
                await self._load(session, caller, address_id)
                served = await domain_by_name(session, name.name.ascii) or await alias_owner(
                    session, name.name.ascii
                )
                if served is not None and not name.wildcard:
                    raise Conflict(f"{name.unicode} is provisioned as a filtered domain")
                await self._check_room(session, caller, CustomDomain, MAX_CUSTOM_DOMAINS)
                taken = await session.scalar(
                    select(CustomDomain.customer_id).where(CustomDomain.name_ascii == name.ascii)
                )
                if taken is not None:
                    raise Conflict(f"{name.unicode} is already a custom domain")
                await self.claims.take_all(
                    session,
                    caller.customer_id,
                    [self.claims.claim(name.ascii, CUSTOM_DOMAIN, row.id)],
                    {name.ascii: name.unicode},
                )
                session.add(row)
        except IntegrityError:
            raise Conflict(f"{name.unicode} is already a custom domain") from None
        return _domain_view(row)

    @staticmethod
    async def _check_room(
        session: AsyncSession, caller: Caller, table: type[Any], limit: int
    ) -> None:
        count = await session.scalar(
            select(func.count()).select_from(table).where(table.customer_id == caller.customer_id)
        )
        if int(count or 0) >= limit:
            raise Conflict(f"an account may have at most {limit} of these; delete some first")

    async def remove_domain(self, caller: Caller, domain_id: str) -> None:
        async with self.db.write() as session:
            row = await session.get(CustomDomain, domain_id)
            if row is None or row.customer_id != caller.customer_id:
                raise NotFound(f"custom domain {domain_id} does not exist")
            await self.claims.release(session, caller.customer_id, [row.name_ascii])
            await session.delete(row)


def _domain_view(row: CustomDomain) -> CustomDomainView:
    return CustomDomainView(row.id, row.name_unicode, row.address_id, row.pattern, row.created_at)


def _check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise InvalidInput(f"limit must be 1-{MAX_PAGE} and offset not negative")
