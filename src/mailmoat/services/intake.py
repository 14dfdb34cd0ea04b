"""What the SMTP front end asks of storage: who a recipient is, and keeping mail safe."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol

from mailmoat.db import webhook_repo
from mailmoat.db.contents import MessageStore
from mailmoat.db.database import Database
from mailmoat.db.domains_repo import DomainRow, alias_owner, domain_by_name
from mailmoat.db.group_commit import GroupCommit
from mailmoat.db.inline_sqlite import InlineUnavailable
from mailmoat.db.intake_repo import (
    RecipientRow,
    entry_scopes,
    find_recipient,
    list_entries,
    new_user_filtered,
)
from mailmoat.db.message_rows import (
    ROUTE_HTTP,
    ROUTE_SMTP,
    Lease,
    NewMessage,
    insert_merged,
    is_queued,
    message_rows,
    new_message_id,
)
from mailmoat.db.message_rows import settle as settle_rows
from mailmoat.domain.lists import ItemType, ListAction
from mailmoat.domain.names import EmailAddress, InvalidName, parse_email
from mailmoat.domain.policy import Action, Profile, recipient_profile
from mailmoat.domain.sender_lists import Entry, Sender, Tier, decide
from mailmoat.domain.settings import AbusePolicy
from mailmoat.domain.states import STATES, MessageState
from mailmoat.domain.webhooks import (
    WebhookPoster,
    WebhookRoute,
    address_token,
    custom_domain_keys,
    pattern_allows,
)
from mailmoat.services.users import create_on_arrival

_STATE_OF_ACTION = {
    Action.ACCEPT: MessageState.QUEUED,
    Action.FLAG: MessageState.QUEUED,
    Action.QUARANTINE: MessageState.QUARANTINED,
    Action.BLOCK: MessageState.REJECTED,
}


def state_for(action: Action) -> str:
    """Where a message starts in the log, given what filtering decided."""
    return _STATE_OF_ACTION[action]


class NoSuchRecipient(Exception):
    """The domain routes to a webhook here, but not this local part."""


class RecipientUnavailable(Exception):
    """Mail to this recipient cannot be taken for now (a temporary failure)."""


@dataclass(frozen=True, slots=True)
class RecipientContext:
    """Everything filtering needs to know about one accepted recipient.

    Mail for a provisioned domain has ``domain``; mail for a webhook address (or a
    custom domain routed to one) has ``webhook`` instead.
    """

    address: str  # as the client wrote it (domain normalised): what is relayed and shown
    domain: DomainRow | None
    recipient_id: str | None  # None until the address has a user record
    filtered: bool
    user_policy: AbusePolicy | None
    entries: tuple[Entry, ...]
    webhook: WebhookRoute | None = None
    user_email: str = ""  # the user's address (lower-cased local part); "" for webhooks

    @property
    def customer_id(self) -> str:
        if self.webhook is not None:
            return self.webhook.customer_id
        assert self.domain is not None
        return self.domain.customer_id

    @property
    def route_key(self) -> str:
        """Recipients with one route key share one log record (and one POST)."""
        if self.webhook is not None:
            return f"address:{self.webhook.id}"
        assert self.domain is not None
        return f"domain:{self.domain.id}"

    def screen(self, sender: Sender) -> Screening:
        """The RCPT-time decision for mail from ``sender`` to this recipient."""
        listed = decide(self.entries, sender)
        if listed is not None and listed.action is ListAction.BLOCKLIST:
            return Screening(listed.rule, None)
        if self.webhook is not None:
            # Webhook mail is scanned and the verdict posted, never held or refused
            # for spam: the receiving application decides.
            safelisted = listed.rule if listed is not None else None
            return Screening(None, Profile(self.webhook.customer_id, AbusePolicy.FLAG, safelisted))
        assert self.domain is not None
        profile = recipient_profile(
            self.domain.customer_id,
            domain_policy=AbusePolicy(self.domain.abuse_policy),
            override=self.domain.abuse_policy_override,
            user_policy=self.user_policy,
            filtered=self.filtered,
            safelist_rule=listed.rule if listed is not None else None,
        )
        return Screening(None, profile)


@dataclass(frozen=True, slots=True)
class Screening:
    """Refused by a blocklist (``blocked_by`` names the rule), or accepted with a profile."""

    blocked_by: str | None
    profile: Profile | None


_TIERS = {"account": Tier.ACCOUNT, "domain": Tier.DOMAIN, "user": Tier.USER}


def _future_user(filtered: bool) -> RecipientRow:
    """What an address without a user record is screened as: the user it would
    become (``create_on_arrival``), whose filter depends on the protected-address
    limit, with the domain's policy and no lists of its own. The id is empty."""
    return RecipientRow("", filtered, None)


def _places_taken(
    accepted: Sequence[RecipientContext], subscription_id: str, address: EmailAddress
) -> int:
    """How many other recipients of the transaction will become filtered users of
    the subscription when its mail is kept."""
    return len(
        {
            c.user_email
            for c in accepted
            if c.recipient_id is None
            and c.filtered
            and c.domain is not None
            and c.domain.subscription_id == subscription_id
            and c.user_email != address.ascii
        }
    )


def _entries(rows: Sequence[tuple[str, str, str, str]]) -> tuple[Entry, ...]:
    return tuple(
        Entry(_TIERS[scope.split(":", 1)[0]], ListAction(action), item, ItemType(item_type))
        for scope, action, item, item_type in rows
    )


class IntakeService:
    def __init__(
        self,
        database: Database,
        contents: MessageStore,
        commits: GroupCommit,
        *,
        webhook_domain: str = "",
    ) -> None:
        self.db = database
        self.contents = contents
        self.commits = commits
        # The domain of generated webhook addresses (<token>@webhook_domain).
        self.webhook_domain = webhook_domain.lower()
        # This process's delivery worker, which takes new mail straight from intake.
        self.local_delivery: LocalDelivery | None = None
        # Posts to webhooks during the SMTP transaction (sync mode); set by the SMTP role.
        self.webhook_poster: WebhookPoster | None = None
        self._creating: dict[str, asyncio.Future[RecipientRow]] = {}

    async def recipient(
        self, raw_address: str, accepted: Sequence[RecipientContext] = ()
    ) -> RecipientContext | None:
        """The context of a recipient address, or None when its domain is not served here.

        Raises InvalidName for an address that is not one. Nothing is written: an
        address of a served domain without a user record is screened as the user
        it would become, and the user is created when mail for it is kept (``keep``).
        ``accepted`` are the transaction's recipients so far: those of them that
        will become filtered users take their places under the protected-address
        limit already, as they would once created.
        """
        address = parse_email(raw_address)
        if self.db.inline is not None:
            try:
                found = self._recipient_inline(address, accepted)
            except InlineUnavailable:
                pass
            else:
                return found if found is not None else await self._webhook_recipient(address)
        async with self.db.read() as session:
            domain = await domain_by_name(session, address.domain.ascii) or await alias_owner(
                session, address.domain.ascii
            )
            if domain is None:
                return await self._webhook_recipient(address)
            row = await find_recipient(session, address.ascii)
            if row is None:
                taken = _places_taken(accepted, domain.subscription_id, address)
                row = _future_user(await new_user_filtered(session, domain.subscription_id, taken))
            entries = await list_entries(
                session, domain.customer_id, entry_scopes(domain.id, row.id or None)
            )
        return self._context(address, DomainRow.of(domain), row, entries)

    async def _webhook_recipient(self, address: EmailAddress) -> RecipientContext | None:
        """A webhook address, or an address at a custom domain; None when neither.

        Raises NoSuchRecipient for an unknown address at a domain that is routed here.
        """
        domain = address.domain.ascii
        async with self.db.read() as session:
            if self.webhook_domain and domain == self.webhook_domain:
                route = await webhook_repo.address_by_token(session, address_token(address.local))
                if route is None:
                    raise NoSuchRecipient(address.ascii)
            else:
                keys = custom_domain_keys(domain)
                found = {r.name_ascii: r for r in await webhook_repo.custom_routes(session, keys)}
                best = next((found[k] for k in keys if k in found), None)
                if best is None:
                    return None
                try:
                    allowed = pattern_allows(best.pattern, address.local)
                except InvalidName as exc:  # stored before patterns were checked by RE2
                    raise RecipientUnavailable(
                        f"custom domain {best.name_ascii}: its pattern must be set again ({exc})"
                    ) from None
                if not allowed:
                    raise NoSuchRecipient(address.ascii)
                route = best.address
            entries = await list_entries(session, route.customer_id, ("account",))
        return RecipientContext(
            address.as_given, None, None, True, None, _entries(entries), webhook=route
        )

    def _recipient_inline(
        self, address: EmailAddress, accepted: Sequence[RecipientContext]
    ) -> RecipientContext | None:
        inline = self.db.inline
        assert inline is not None
        domain = inline.domain(address.domain.ascii) or inline.alias_owner(address.domain.ascii)
        if domain is None:
            return None
        row = inline.recipient(address.ascii)
        if row is None:
            taken = _places_taken(accepted, domain.subscription_id, address)
            row = _future_user(inline.new_user_filtered(domain.subscription_id, taken))
        entries = inline.list_entries(domain.customer_id, entry_scopes(domain.id, row.id or None))
        return self._context(address, domain, row, entries)

    async def _create_users(self, wanted: Sequence[RecipientContext]) -> dict[str, str]:
        """Create the users of recipients that have none yet; their ids by address.

        One after the other, in the order of the transaction: the first takes the
        protected-address limit's next place, as when screened."""
        return {c.address: (await self._create_recipient(c)).id for c in wanted}

    async def _create_recipient(self, context: RecipientContext) -> RecipientRow:
        """Create a user record once, however many sessions ask for it at the same time."""
        email = context.user_email
        pending = self._creating.get(email)
        if pending is None:
            pending = asyncio.ensure_future(self._insert_recipient(context))
            self._creating[email] = pending
            pending.add_done_callback(lambda _: self._creating.pop(email, None))
        return await asyncio.shield(pending)

    async def _insert_recipient(self, context: RecipientContext) -> RecipientRow:
        domain = context.domain
        assert domain is not None
        async with self.db.write() as session:
            created = await create_on_arrival(
                session,
                customer_id=domain.customer_id,
                subscription_id=domain.subscription_id,
                domain_id=domain.id,
                email=context.user_email,
            )
            return RecipientRow(created.id, created.filter, created.abuse_policy)

    @staticmethod
    def _context(
        address: EmailAddress,
        domain: DomainRow,
        row: RecipientRow,
        entries: Sequence[tuple[str, str, str, str]],
    ) -> RecipientContext:
        policy = AbusePolicy(row.abuse_policy) if row.abuse_policy else None
        return RecipientContext(
            address.as_given,
            domain,
            row.id or None,
            row.filter,
            policy,
            _entries(entries),
            user_email=address.ascii,
        )

    async def keep(
        self, messages: Sequence[NewMessage], contexts: Sequence[RecipientContext] = ()
    ) -> None:
        """Store bytes durably, then commit the records; return only when both are done.

        ``contexts`` are those the records' recipients were screened with: those
        of accepted (not rejected) mail that have no user yet get one first, and
        the records its id. So users come from mail that was accepted, never from
        RCPT commands alone.

        Queued mail goes to this process's delivery worker with its queue row
        already leased to it, so that delivery starts without a trip to the queue.
        """
        await self._give_users(messages, contexts)
        kept = [m for m in messages if m.data is not None]
        local = self.local_delivery
        handoff = local if local is not None and local.accepting() else None
        # On failure the sender is told to try again. Bytes already written stay
        # for the spool sweeper: whether the records were committed is not always
        # known (a connection lost during COMMIT), and deleting them could leave a
        # committed record without its content.
        lease = None
        if handoff is not None:
            lease = Lease(handoff.owner, datetime.now(UTC) + handoff.lease)
        store = self.contents
        rows = message_rows(messages, lease, inline=store.keeps_inline)
        # Small messages' bytes are rows of the same transaction; the writer stores
        # larger ones in spool files (fsync) before it commits the records.
        writes = [
            partial(store.spool.write_now, m.id, m.data)
            for m in kept
            if m.data is not None and not store.keeps_inline(m.data)
        ]
        await self.commits.run_merged(insert_merged, rows, prepare=writes)
        if handoff is not None:
            handoff.take([m for m in messages if is_queued(m)])

    async def _give_users(
        self, messages: Sequence[NewMessage], contexts: Sequence[RecipientContext]
    ) -> None:
        userless = {c.address: c for c in contexts if c.recipient_id is None and c.user_email}
        wanted = {
            address: userless[address]
            for m in messages
            if m.state != MessageState.REJECTED
            for address, recipient_id in m.recipients
            if recipient_id is None and address in userless
        }
        if not wanted:
            return
        ids = await self._create_users(list(wanted.values()))
        for m in messages:
            if m.state != MessageState.REJECTED:
                m.recipients = [(a, i if i is not None else ids.get(a)) for a, i in m.recipients]

    async def settle(self, message: NewMessage) -> None:
        """Record the outcome of a message kept before it was posted (sync webhooks)."""
        await self.commits.run(partial(settle_rows, message=message))


class LocalDelivery(Protocol):
    """A delivery worker in this process that takes newly queued mail directly."""

    @property
    def owner(self) -> str:
        """The name its leases carry."""

    @property
    def lease(self) -> timedelta: ...

    def accepting(self) -> bool: ...

    def take(self, messages: Sequence[NewMessage]) -> None: ...


__all__ = [
    "ROUTE_HTTP",
    "ROUTE_SMTP",
    "STATES",
    "IntakeService",
    "InvalidName",
    "MessageState",
    "NewMessage",
    "new_message_id",
]
