"""Provisioning: domains, aliases, settings, downstream addresses, key association.

Access rule (the same for every operation on one domain): the domain must exist
(404), belong to the caller's customer (403, or 401 where the API says so), not be
associated with another of the customer's keys (403), and not be an alias (403).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailmoat.db import domains_repo as repo
from mailmoat.db import webhook_repo
from mailmoat.db.claims_repo import Claim
from mailmoat.db.database import Database
from mailmoat.db.inline_sqlite import InlineSqlite, InlineUnavailable
from mailmoat.db.tables import (
    Domain,
    DomainAdmin,
    DomainAlias,
    Subscription,
    new_id,
)
from mailmoat.db.tables import (
    DownstreamAddress as DownstreamRow,
)
from mailmoat.domain.addresses import AddressPolicy
from mailmoat.domain.claims import NameRules
from mailmoat.domain.downstream import MAX_DOWNSTREAM_ADDRESSES, DownstreamAddress
from mailmoat.domain.names import DomainName
from mailmoat.domain.settings import AbusePolicy, DomainSettings
from mailmoat.services import audit, name_claims
from mailmoat.services.caller import Caller
from mailmoat.services.domain_models import (
    DomainSections,
    DomainView,
    ParsedSections,
    parse_domain_input,
    parse_sections,
)
from mailmoat.services.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceError,
)
from mailmoat.services.keys import KeyService
from mailmoat.services.name_claims import NameClaims

MAX_BATCH = 1000
MAX_PAGE = 5000


@dataclass(frozen=True, slots=True)
class BatchItem:
    name: str
    sections: DomainSections


@dataclass(frozen=True, slots=True)
class _NewDomain:
    """A domain a batch creates: its row, the rows under it, the names it claims."""

    row: dict[str, Any]
    children: dict[Any, list[dict[str, Any]]]
    claims: list[Claim]
    shown: dict[str, str]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome for one domain of a batch request (a CommentedDomain)."""

    name: str
    code: int
    comment: str
    view: DomainView | None = None

    @property
    def ok(self) -> bool:
        return self.code < 300


AnyDomain = Domain | repo.DomainRow
D = TypeVar("D", Domain, repo.DomainRow)


def settings_of(domain: AnyDomain) -> DomainSettings:
    return DomainSettings(
        abuse_policy=AbusePolicy(domain.abuse_policy),
        abuse_policy_override=domain.abuse_policy_override,
        spam_header_name=domain.spam_header_name,
        spam_header_value=domain.spam_header_value,
    )


def _downstream_rows(domain_id: str, records: Sequence[DownstreamAddress]) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id(),
            "domain_id": domain_id,
            "position": i,
            "priority": r.priority,
            "weight": r.weight,
            "port": r.port,
            "target": r.target,
        }
        for i, r in enumerate(records)
    ]


def _alias_rows(domain_id: str, aliases: Sequence[DomainName]) -> list[dict[str, Any]]:
    return [
        {"id": new_id(), "domain_id": domain_id, "name_ascii": a.ascii, "name_unicode": a.unicode}
        for a in aliases
    ]


def _admin_rows(domain_id: str, admins: Sequence[str]) -> list[dict[str, Any]]:
    return [{"id": new_id(), "domain_id": domain_id, "email": e} for e in admins]


def _check_access(
    caller: Caller,
    name: DomainName,
    domain: D | None,
    alias_owner: AnyDomain | None,
    foreign: type[ServiceError],
) -> D:
    if domain is None:
        if alias_owner is None:
            raise NotFound(f"domain {name.unicode} does not exist")
        if alias_owner.customer_id != caller.customer_id:
            raise foreign(f"domain {name.unicode} belongs to another customer")
        raise Forbidden(
            f"{name.unicode} is an alias of {alias_owner.name_unicode}; use that domain"
        )
    if domain.customer_id != caller.customer_id:
        raise foreign(f"domain {name.unicode} belongs to another customer")
    if domain.api_key_id is not None and domain.api_key_id != caller.key_id:
        raise Forbidden(f"domain {name.unicode} is associated with a different API key")
    return domain


async def load_domain(
    session: AsyncSession,
    caller: Caller,
    raw_name: str,
    *,
    foreign: type[ServiceError] = Forbidden,
) -> Domain:
    """The domain named in a request, if this caller may act on it."""
    name = parse_domain_input(raw_name)
    domain = await repo.domain_by_name(session, name.ascii)
    owner = await repo.alias_owner(session, name.ascii) if domain is None else None
    return _check_access(caller, name, domain, owner, foreign)


async def load_domains(
    session: AsyncSession,
    caller: Caller,
    raw_names: Sequence[str],
    *,
    foreign: type[ServiceError] = Forbidden,
) -> list[Domain | ServiceError]:
    """``load_domain`` for many names in a few queries: a domain or an error per name."""
    parsed: list[DomainName | ServiceError] = []
    for raw in raw_names:
        try:
            parsed.append(parse_domain_input(raw))
        except ServiceError as exc:
            parsed.append(exc)
    names = [n.ascii for n in parsed if isinstance(n, DomainName)]
    domains = await repo.domains_by_names(session, names)
    owners = await repo.alias_owners(session, [n for n in names if n not in domains])
    results: list[Domain | ServiceError] = []
    for name in parsed:
        if isinstance(name, ServiceError):
            results.append(name)
            continue
        try:
            results.append(
                _check_access(
                    caller, name, domains.get(name.ascii), owners.get(name.ascii), foreign
                )
            )
        except ServiceError as exc:
            results.append(exc)
    return results


def _view(domain: AnyDomain, found: repo.Children, handle: str) -> DomainView:
    return DomainView(
        name=DomainName(domain.name_ascii, domain.name_unicode),
        subscription_handle=handle,
        settings=settings_of(domain),
        admins=found.admins.get(domain.id, []),
        downstreams=found.downstreams.get(domain.id, []),
        aliases=[DomainName(a, u) for a, u in found.aliases.get(domain.id, [])],
    )


class DomainService:
    def __init__(
        self,
        database: Database,
        keys: KeyService,
        webhook_domain: str = "",
        targets: AddressPolicy | None = None,
        claims: NameClaims | None = None,
    ) -> None:
        self.db = database
        self.keys = keys
        # Downstream servers set through any front end pass this policy.
        self.targets = targets or AddressPolicy()
        self.claims = claims or NameClaims(NameRules())
        # The domain of generated webhook addresses: never a provisioned domain.
        self.webhook_domain = webhook_domain.lower()

    async def _routed_to_webhooks(self, session: AsyncSession, names: Sequence[str]) -> set[str]:
        """Names that mail routing gives to webhooks: the address domain, custom domains."""
        routed = await webhook_repo.routed_names(session, names)
        if self.webhook_domain in names:
            routed.add(self.webhook_domain)
        return routed

    # -- reading ---------------------------------------------------------------

    async def views(self, session: AsyncSession, domains: Sequence[Domain]) -> list[DomainView]:
        found = await repo.children(session, [d.id for d in domains])
        handles = await repo.subscription_handles(session, (d.subscription_id for d in domains))
        return [_view(d, found, handles.get(d.subscription_id, "")) for d in domains]

    async def get(self, caller: Caller, raw_name: str) -> DomainView:
        name = parse_domain_input(raw_name)
        if self.db.inline is not None:
            try:
                return self._get_inline(self.db.inline, caller, name)
            except InlineUnavailable:
                pass
        async with self.db.read() as session:
            domain = await load_domain(session, caller, name.ascii)
            return (await self.views(session, [domain]))[0]

    @staticmethod
    def _get_inline(inline: InlineSqlite, caller: Caller, name: DomainName) -> DomainView:
        """``get`` on the inline SQLite reader: the lookup made most often."""
        domain = inline.domain(name.ascii)
        owner = inline.alias_owner(name.ascii) if domain is None else None
        checked = _check_access(caller, name, domain, owner, Forbidden)
        handle = repo.known_subscription_handle(checked.subscription_id)
        if handle is None:
            handle = inline.subscription_handle(checked.subscription_id) or ""
        return _view(checked, inline.children(checked.id), handle)

    async def page(
        self, caller: Caller, names: Sequence[str] | None, limit: int, offset: int
    ) -> tuple[list[DomainView], int]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        if offset < 0:
            raise InvalidInput("offset must not be negative")
        condition = repo.visible_to(caller.customer_id, caller.key_id)
        if names:
            wanted = sorted({parse_domain_input(n).ascii for n in names})
            if len(wanted) > MAX_PAGE:
                raise InvalidInput(f"at most {MAX_PAGE} domains may be named at once")
            condition = condition & Domain.name_ascii.in_(wanted)
        async with self.db.read() as session:
            total = int(
                await session.scalar(select(func.count()).select_from(Domain).where(condition)) or 0
            )
            page = (
                await session.scalars(
                    select(Domain)
                    .where(condition)
                    .order_by(Domain.name_ascii)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            return await self.views(session, page), total

    # -- provisioning ----------------------------------------------------------

    async def _own_subscription(
        self, session: AsyncSession, caller: Caller, handle: str
    ) -> Subscription:
        # FOR UPDATE: concurrent provisioning into one subscription must take turns,
        # or each could count the domains before the others insert and pass the limit.
        # (SQLite write transactions are serialised already; it ignores the clause.)
        subscription = await session.scalar(
            select(Subscription).where(Subscription.handle == handle).with_for_update()
        )
        if subscription is None or subscription.customer_id != caller.customer_id:
            raise Forbidden(f"subscription {handle!r} is not one of yours")
        if not subscription.active:
            raise Forbidden(f"subscription {handle!r} is not active")
        return subscription

    async def provision(
        self,
        caller: Caller,
        raw_name: str,
        subscription_handle: str,
        sections: DomainSections,
        *,
        associate_key: bool = False,
        overwrite: bool = False,
    ) -> tuple[DomainView, bool]:
        """Provision one domain; the bool says whether it was newly created."""
        result = await self.provision_batch(
            caller,
            subscription_handle,
            [BatchItem(raw_name, sections)],
            associate_key=associate_key,
            overwrite=overwrite,
            single=True,
        )
        item = result[0]
        assert item.view is not None
        return item.view, item.code == 201

    async def provision_batch(
        self,
        caller: Caller,
        subscription_handle: str,
        items: Sequence[BatchItem],
        *,
        associate_key: bool = False,
        overwrite: bool = False,
        single: bool = False,
    ) -> list[ItemResult]:
        """Provision many domains in one transaction.

        Each item gets its own result. In ``single`` mode the first problem is
        raised as an error instead (the one-domain endpoint answers with it).
        A batch that would exceed the subscription's domain limit provisions
        nothing and raises Forbidden.
        """
        if len(items) > MAX_BATCH:
            raise InvalidInput(f"at most {MAX_BATCH} domains per batch")
        try:
            async with self.db.write() as session:
                return await self._provision_batch(
                    session, caller, subscription_handle, items, associate_key, overwrite, single
                )
        except IntegrityError:
            # Two requests raced to create the same name; the loser is told as if
            # it had come second.
            raise Conflict("the domain or an alias was provisioned concurrently") from None

    async def _provision_batch(
        self,
        session: AsyncSession,
        caller: Caller,
        subscription_handle: str,
        items: Sequence[BatchItem],
        associate_key: bool,
        overwrite: bool,
        single: bool,
    ) -> list[ItemResult]:
        subscription = await self._own_subscription(session, caller, subscription_handle)
        results: list[ItemResult | None] = [None] * len(items)
        parsed: dict[int, tuple[DomainName, ParsedSections]] = {}
        for i, item in enumerate(items):
            try:
                name = parse_domain_input(item.name)
                sections = parse_sections(item.sections, own_name=name, targets=self.targets)
                parsed[i] = (name, sections)
            except ServiceError as exc:
                if single:
                    raise
                results[i] = ItemResult(str(item.name), exc.code, exc.message)

        names = [n.ascii for n, _ in parsed.values()]
        alias_names = [a.ascii for _, s in parsed.values() for a in (s.aliases or [])]
        existing = await repo.domains_by_names(session, names + alias_names)
        taken_aliases = await repo.alias_names_taken(session, names + alias_names)
        routed = await self._routed_to_webhooks(session, names + alias_names)

        fresh: dict[int, _NewDomain] = {}
        claimed: set[str] = set()  # names (domains and aliases) taken by this batch
        existing_own: list[tuple[int, Domain, ParsedSections]] = []
        for i, (name, sections) in parsed.items():
            try:
                self.claims.check(name.ascii, name.unicode)
                for alias in sections.aliases or []:
                    self.claims.check(alias.ascii, f"alias {alias.unicode}")
                domain = existing.get(name.ascii)
                if domain is not None:
                    if domain.customer_id != caller.customer_id:
                        raise Conflict(f"domain {name.unicode} is provisioned by another customer")
                    if domain.api_key_id not in (None, caller.key_id):
                        raise (Forbidden if single else Conflict)(
                            f"domain {name.unicode} is associated with a different API key"
                        )
                    existing_own.append((i, domain, sections))
                    continue
                if name.ascii in taken_aliases or name.ascii in claimed:
                    raise Conflict(f"{name.unicode} is already in use as an alias or domain")
                if name.ascii in routed:
                    raise Conflict(f"{name.unicode} is routed to a webhook address")
                for alias in sections.aliases or []:
                    if (
                        alias.ascii in existing
                        or alias.ascii in taken_aliases
                        or alias.ascii in routed
                        or (alias.ascii in claimed or alias.ascii in names)
                    ):
                        raise Conflict(f"alias {alias.unicode} is already in use")
            except ServiceError as exc:
                if single:
                    raise
                results[i] = ItemResult(name.unicode, exc.code, exc.message)
                continue
            claimed.add(name.ascii)
            claimed.update(a.ascii for a in sections.aliases or [])
            domain_id = new_id()
            settings = (
                sections.settings.apply(DomainSettings()) if sections.settings else DomainSettings()
            )
            row = {
                "id": domain_id,
                "customer_id": caller.customer_id,
                "subscription_id": subscription.id,
                "name_ascii": name.ascii,
                "name_unicode": name.unicode,
                "api_key_id": caller.key_id if associate_key else None,
                "abuse_policy": settings.abuse_policy.value,
                "abuse_policy_override": settings.abuse_policy_override,
                "spam_header_name": settings.spam_header_name,
                "spam_header_value": settings.spam_header_value,
            }
            fresh[i] = _NewDomain(
                row,
                {
                    DomainAlias: _alias_rows(domain_id, sections.aliases or []),
                    DomainAdmin: _admin_rows(domain_id, sections.admins or []),
                    DownstreamRow: _downstream_rows(domain_id, sections.downstreams or []),
                },
                [
                    self.claims.claim(name.ascii, name_claims.DOMAIN, domain_id),
                    *(
                        self.claims.claim(a.ascii, name_claims.ALIAS, domain_id)
                        for a in sections.aliases or []
                    ),
                ],
                {name.ascii: name.unicode} | {a.ascii: a.unicode for a in sections.aliases or []},
            )
            results[i] = ItemResult(
                name.unicode,
                201,
                "provisioned",
                DomainView(
                    name=name,
                    subscription_handle=subscription.handle,
                    settings=settings,
                    admins=sections.admins or [],
                    downstreams=sections.downstreams or [],
                    aliases=sections.aliases or [],
                ),
            )

        if single:  # a refusal rolls back the whole transaction: no savepoint needed
            for new in fresh.values():
                await self.claims.take_all(session, caller.customer_id, new.claims, new.shown)
        else:
            for i, reason in (await self._claim_new(session, caller, fresh)).items():
                results[i] = ItemResult(parsed[i][0].unicode, Conflict.code, reason)
                del fresh[i]
        new_rows = [new.row for new in fresh.values()]
        limit = subscription.domain_limit
        if new_rows and limit is not None:
            current = await repo.count_in_subscription(session, subscription.id)
            if current + len(new_rows) > limit:
                raise Forbidden(
                    f"subscription {subscription.handle!r} allows {limit} domains; "
                    f"{current} are provisioned and this request adds {len(new_rows)}"
                )
        await repo.bulk_insert(session, Domain, new_rows)
        for table in (DomainAlias, DomainAdmin, DownstreamRow):
            rows = [r for new in fresh.values() for r in new.children[table]]
            await repo.bulk_insert(session, table, rows)

        for i, domain, sections in existing_own:
            try:
                if overwrite:
                    await self._apply_sections(session, domain, sections)
                if associate_key:
                    domain.api_key_id = caller.key_id
            except ServiceError as exc:
                # _apply_sections changes nothing before its last check has passed.
                if single:
                    raise
                results[i] = ItemResult(domain.name_unicode, exc.code, exc.message)
                continue
            await session.flush()
            view = (await self.views(session, [domain]))[0]
            comment = "already provisioned" + ("; settings overwritten" if overwrite else "")
            # 200 for the single endpoint; the batch format only knows 201 for success.
            results[i] = ItemResult(domain.name_unicode, 200 if single else 201, comment, view)
        return [r for r in results if r is not None]

    async def _claim_new(
        self, session: AsyncSession, caller: Caller, fresh: dict[int, _NewDomain]
    ) -> dict[int, str]:
        """Claim the names of the new domains; the refusal of each item that clashes.

        All at once in the common case; when some clash, their rows are rolled back
        and the others claimed again without them.
        """
        refused: dict[int, str] = {}
        while True:
            pending = {i: new for i, new in fresh.items() if i not in refused}
            if not pending:
                return refused
            savepoint = await session.begin_nested()
            clashes = await self.claims.take(
                session, caller.customer_id, [c for new in pending.values() for c in new.claims]
            )
            if not clashes:
                await savepoint.commit()
                return refused
            await savepoint.rollback()
            by_name = {clash.name: clash for clash in clashes}
            for i, new in pending.items():
                clash = next((by_name[c.name] for c in new.claims if c.name in by_name), None)
                if clash is not None:
                    refused[i] = name_claims.describe(clash, new.shown)

    async def _apply_sections(
        self, session: AsyncSession, domain: Domain, sections: ParsedSections
    ) -> None:
        """Replace each section present in the request; keep the others.

        Conflicts are checked before anything changes: a batch carries on after a
        refused item, which must leave its domain as it was.
        """
        if sections.aliases is not None:
            for alias in sections.aliases:
                self.claims.check(alias.ascii, f"alias {alias.unicode}")
            wanted = [a.ascii for a in sections.aliases]
            clashing = await repo.domains_by_names(session, wanted)
            if clashing:
                raise Conflict(f"alias {next(iter(clashing))} is provisioned as a domain")
            taken = await repo.alias_names_taken(session, wanted)
            foreign = [n for n, owner in taken.items() if owner != domain.id]
            if foreign:
                raise Conflict(f"alias {foreign[0]} is already in use by another domain")
            routed = await self._routed_to_webhooks(session, wanted)
            if routed:
                raise Conflict(f"alias {next(iter(routed))} is routed to a webhook address")
            await self._reclaim_aliases(session, domain, sections.aliases)
        if sections.settings is not None:
            settings = sections.settings.apply(settings_of(domain))
            domain.abuse_policy = settings.abuse_policy.value
            domain.abuse_policy_override = settings.abuse_policy_override
            domain.spam_header_name = settings.spam_header_name
            domain.spam_header_value = settings.spam_header_value
        if sections.aliases is not None:
            await repo.clear_children(session, DomainAlias, domain.id)
            await session.flush()
            await repo.bulk_insert(session, DomainAlias, _alias_rows(domain.id, sections.aliases))
        if sections.admins is not None:
            await repo.clear_children(session, DomainAdmin, domain.id)
            await repo.bulk_insert(session, DomainAdmin, _admin_rows(domain.id, sections.admins))
        if sections.downstreams is not None:
            await repo.clear_children(session, DownstreamRow, domain.id)
            await repo.bulk_insert(
                session, DownstreamRow, _downstream_rows(domain.id, sections.downstreams)
            )

    async def _reclaim_aliases(
        self, session: AsyncSession, domain: Domain, aliases: Sequence[DomainName]
    ) -> None:
        """Claim the new aliases and release the dropped ones, or change nothing."""
        current = set(await repo.alias_names_of(session, domain.id))
        wanted = {a.ascii: a.unicode for a in aliases}
        savepoint = await session.begin_nested()
        clashes = await self.claims.take(
            session,
            domain.customer_id,
            [
                self.claims.claim(a, name_claims.ALIAS, domain.id)
                for a in wanted
                if a not in current
            ],
        )
        if clashes:
            await savepoint.rollback()
            raise Conflict(name_claims.describe(clashes[0], wanted))
        await self.claims.release(
            session, domain.customer_id, [a for a in current if a not in wanted]
        )
        await savepoint.commit()

    async def update_settings(
        self, caller: Caller, raw_name: str, sections: DomainSections
    ) -> DomainView:
        async with self.db.write() as session:
            domain = await load_domain(session, caller, raw_name)
            parsed = parse_sections(
                sections,
                own_name=DomainName(domain.name_ascii, domain.name_unicode),
                targets=self.targets,
            )
            await self._apply_sections(session, domain, parsed)
            changed = [
                name
                for name, part in (
                    ("settings", parsed.settings),
                    ("admins", parsed.admins),
                    ("downstream addresses", parsed.downstreams),
                    ("aliases", parsed.aliases),
                )
                if part is not None
            ]
            await audit.record(
                session,
                caller.actor,
                "changed domain settings",
                domain_id=domain.id,
                detail=", ".join(changed),
            )
            await session.flush()
            return (await self.views(session, [domain]))[0]

    # -- deprovisioning ----------------------------------------------------------

    async def deprovision(self, caller: Caller, raw_name: str) -> None:
        async with self.db.write() as session:
            domain = await load_domain(session, caller, raw_name)
            await self._release_domains(session, caller, [domain.id], [domain.name_ascii])
            await session.delete(domain)

    async def deprovision_batch(self, caller: Caller, names: Sequence[str]) -> list[ItemResult]:
        if not 1 <= len(names) <= MAX_BATCH:
            raise InvalidInput(f"name between 1 and {MAX_BATCH} domains")
        results: list[ItemResult] = []
        async with self.db.write() as session:
            found = await load_domains(session, caller, names)
            doomed: dict[str, None] = {}
            for raw, domain in zip(names, found, strict=True):
                if isinstance(domain, ServiceError):
                    results.append(ItemResult(str(raw), domain.code, domain.message))
                    continue
                doomed[domain.id] = None
                results.append(ItemResult(domain.name_unicode, 204, "deprovisioned"))
            gone = [d.name_ascii for d in found if isinstance(d, Domain)]
            await self._release_domains(session, caller, list(doomed), gone)
            for part in repo.chunks(list(doomed)):
                await session.execute(delete(Domain).where(Domain.id.in_(part)))
        return results

    async def _release_domains(
        self, session: AsyncSession, caller: Caller, ids: Sequence[str], names: Sequence[str]
    ) -> None:
        aliases = await repo.alias_names_of(session, ids)
        await self.claims.release(session, caller.customer_id, sorted({*names, *aliases}))

    # -- aliases ---------------------------------------------------------------

    async def add_alias(
        self, caller: Caller, raw_name: str, raw_alias: str
    ) -> tuple[DomainView, DomainName]:
        alias = parse_domain_input(raw_alias)
        self.claims.check(alias.ascii, alias.unicode)
        try:
            return await self._add_alias(caller, raw_name, alias)
        except IntegrityError:
            raise Conflict(f"{alias.unicode} was claimed concurrently") from None

    async def _add_alias(
        self, caller: Caller, raw_name: str, alias: DomainName
    ) -> tuple[DomainView, DomainName]:
        async with self.db.write() as session:
            domain = await load_domain(session, caller, raw_name)
            if alias.ascii == domain.name_ascii or await repo.domain_by_name(session, alias.ascii):
                raise Conflict(f"{alias.unicode} is already provisioned as a domain")
            if await repo.alias_owner(session, alias.ascii):
                raise Conflict(f"{alias.unicode} is already an alias")
            if await self._routed_to_webhooks(session, [alias.ascii]):
                raise Conflict(f"{alias.unicode} is routed to a webhook address")
            await self.claims.take_all(
                session,
                domain.customer_id,
                [self.claims.claim(alias.ascii, name_claims.ALIAS, domain.id)],
                {alias.ascii: alias.unicode},
            )
            session.add(
                DomainAlias(domain_id=domain.id, name_ascii=alias.ascii, name_unicode=alias.unicode)
            )
            await session.flush()
            return (await self.views(session, [domain]))[0], alias

    async def remove_alias(self, caller: Caller, raw_name: str, raw_alias: str) -> None:
        alias = parse_domain_input(raw_alias)
        async with self.db.write() as session:
            domain = await load_domain(session, caller, raw_name)
            row = await session.scalar(
                select(DomainAlias).where(
                    DomainAlias.domain_id == domain.id, DomainAlias.name_ascii == alias.ascii
                )
            )
            if row is None:
                raise NotFound(f"{alias.unicode} is not an alias of {domain.name_unicode}")
            await self.claims.release(session, domain.customer_id, [alias.ascii])
            await session.delete(row)

    # -- downstream addresses ----------------------------------------------------

    async def downstreams(
        self, caller: Caller, raw_name: str, limit: int, offset: int
    ) -> list[DownstreamAddress]:
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise InvalidInput(f"limit must be 1-{MAX_PAGE} and offset not negative")
        view = await self.get(caller, raw_name)
        return view.downstreams[offset : offset + limit]

    async def set_downstreams(
        self, caller: Caller, raw_name: str, records: Sequence[DownstreamAddress]
    ) -> list[DownstreamAddress]:
        if len(records) > MAX_DOWNSTREAM_ADDRESSES:
            raise InvalidInput(
                f"at most {MAX_DOWNSTREAM_ADDRESSES} downstream addresses are allowed"
            )
        view = await self.update_settings(
            caller, raw_name, DomainSections(downstreams=list(records))
        )
        return view.downstreams

    # -- key association ----------------------------------------------------------

    async def reassociate_key(self, caller: Caller, raw_name: str, token: str) -> None:
        key_id = await self.keys.find_id(caller.customer_id, token)
        if key_id is None:
            raise InvalidInput("apiKey is not a valid API key of this customer")
        async with self.db.write() as session:
            domain = await load_domain(session, caller, raw_name)
            domain.api_key_id = key_id
