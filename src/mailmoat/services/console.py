"""What a domain admin can see and do in the Domain Console.

Every use case here is confined to the admin's one domain and delegates the rule
itself to the service that owns it (messages, lists, domains, reports), so that
the console and the API cannot drift apart.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import select

from mailmoat.db.database import Database
from mailmoat.db.tables import Recipient
from mailmoat.domain.downstream import DownstreamAddress
from mailmoat.domain.lists import ListAction
from mailmoat.domain.names import InvalidName, parse_email
from mailmoat.domain.settings import AbusePolicy
from mailmoat.services import audit
from mailmoat.services.console_sessions import DomainAdmin
from mailmoat.services.domain_models import DomainSections, DomainView, SettingsPatch
from mailmoat.services.domains import DomainService
from mailmoat.services.errors import Forbidden, InvalidInput, NotFound
from mailmoat.services.lists import ListItemView, ListService
from mailmoat.services.messages import MessageFilter, MessageService, MessageView
from mailmoat.services.reports import ReportService, ReportType

PAGE_SIZE = 50
# The states the log can be filtered by, most useful first.
LOG_STATES = ("delivered", "quarantined", "rejected", "deferred", "failed", "queued", "deleted")
POLICIES = tuple(p.value for p in AbusePolicy)
MAX_DOWNSTREAM_ROWS = 10


def list_action(name: str) -> ListAction:
    try:
        return ListAction(name)
    except ValueError:
        raise InvalidInput("list must be safelist or blocklist") from None


def downstream_rows(rows: list[tuple[str, str, str, str]]) -> list[DownstreamAddress]:
    """(target, port, priority, weight) as typed in a form; rows without a target are
    left out, empty numbers take the usual defaults (25, 10, 10)."""
    records = []
    for n, (target, port, priority, weight) in enumerate(rows, start=1):
        if not target.strip():
            continue
        try:
            records.append(
                DownstreamAddress(
                    priority=int(priority.strip() or 10),
                    weight=int(weight.strip() or 10),
                    port=int(port.strip() or 25),
                    target=target.strip(),
                )
            )
        except ValueError:
            raise InvalidInput(f"row {n}: priority, weight and port must be numbers") from None
    return records


HEADER_LIMIT = 64 * 1024  # of the header block shown on a message's page


@dataclass(frozen=True, slots=True)
class MessageDetail:
    message: MessageView
    headers: list[tuple[str, str]]  # empty when the content is no longer kept
    audit: list[audit.AuditView]


class ConsoleService:
    def __init__(
        self,
        database: Database,
        messages: MessageService,
        lists: ListService,
        domains: DomainService,
        reports: ReportService,
    ) -> None:
        self.db = database
        self.messages = messages
        self.lists = lists
        self.domains = domains
        self.reports = reports

    # -- the message log -------------------------------------------------------------

    async def log(
        self, admin: DomainAdmin, wanted: MessageFilter, page: int
    ) -> tuple[list[MessageView], int]:
        if wanted.state and wanted.state not in LOG_STATES:
            raise InvalidInput(f"unknown state {wanted.state!r}")
        return await self.messages.for_domain(
            admin.caller,
            admin.domain,
            wanted,
            PAGE_SIZE,
            (max(page, 1) - 1) * PAGE_SIZE,
            within=admin.domain_id,
        )

    async def quarantine(self, admin: DomainAdmin, page: int) -> tuple[list[MessageView], int]:
        return await self.messages.quarantine(
            admin.caller, PAGE_SIZE, (max(page, 1) - 1) * PAGE_SIZE, within=admin.domain_id
        )

    async def message(self, admin: DomainAdmin, message_id: str) -> MessageDetail:
        view = await self.messages.get(admin.caller, message_id, within=admin.domain_id)
        trail = await self.messages.audit_trail(admin.caller, message_id, within=admin.domain_id)
        try:
            raw = await self.messages.raw(admin.caller, message_id, within=admin.domain_id)
        except NotFound:
            raw = b""
        return MessageDetail(view, header_lines(raw), trail)

    # -- quarantine actions ------------------------------------------------------------

    async def release(self, admin: DomainAdmin, message_id: str, *, safelist: bool) -> None:
        await self.messages.release(
            admin.caller, message_id, within=admin.domain_id, safelist_sender=safelist
        )

    async def delete(self, admin: DomainAdmin, message_id: str, *, block: bool) -> None:
        await self.messages.delete(
            admin.caller, message_id, within=admin.domain_id, block_sender=block
        )

    async def report(self, admin: DomainAdmin, message_id: str, *, spam: bool) -> None:
        raw = await self.messages.raw(admin.caller, message_id, within=admin.domain_id)
        kind = ReportType.FALSE_NEGATIVE if spam else ReportType.FALSE_POSITIVE
        await self.reports.file_for_message(admin.caller, message_id, raw, kind)

    # -- lists -------------------------------------------------------------------------

    async def users(self, admin: DomainAdmin) -> list[str]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Recipient.email)
                .where(Recipient.domain_id == admin.domain_id)
                .order_by(Recipient.email)
            )
            return list(rows)

    async def entries(
        self, admin: DomainAdmin, action: ListAction, user: str | None
    ) -> list[ListItemView]:
        user = await self._own_user(admin, user)
        if user is None:
            return await self.lists.entries(admin.caller, action, domain=admin.domain)
        return await self.lists.entries(admin.caller, action, user=user)

    async def add(
        self, admin: DomainAdmin, action: ListAction, item: str, user: str | None
    ) -> None:
        user = await self._own_user(admin, user)
        if user is None:
            await self.lists.add(admin.caller, action, item, domain=admin.domain)
        else:
            await self.lists.add(admin.caller, action, item, user=user)

    async def remove(
        self, admin: DomainAdmin, action: ListAction, item: str, user: str | None
    ) -> None:
        user = await self._own_user(admin, user)
        if user is None:
            await self.lists.remove(admin.caller, action, item, domain=admin.domain)
        else:
            await self.lists.remove(admin.caller, action, item, user=user)

    async def _own_user(self, admin: DomainAdmin, user: str | None) -> str | None:
        """A user of the admin's domain, by address; None for the domain's own lists."""
        if not user:
            return None
        try:
            address = parse_email(user).ascii
        except InvalidName as exc:
            raise InvalidInput(str(exc)) from None
        async with self.db.read() as session:
            found = await session.scalar(
                select(Recipient.email).where(
                    Recipient.email == address, Recipient.domain_id == admin.domain_id
                )
            )
        if found is None:
            raise NotFound(f"{address} is not a user of {admin.domain}")
        return found

    # -- settings ----------------------------------------------------------------------

    async def settings(self, admin: DomainAdmin) -> DomainView:
        return await self.domains.get(admin.caller, admin.domain)

    async def update_settings(
        self,
        admin: DomainAdmin,
        patch: SettingsPatch | None = None,
        downstreams: list[DownstreamAddress] | None = None,
    ) -> DomainView:
        if not admin.may_edit_settings:
            raise Forbidden(
                f"{admin.domain} is managed through an API key of your provider; "
                "its settings can be read here but not changed"
            )
        return await self.domains.update_settings(
            admin.caller, admin.domain, DomainSections(settings=patch, downstreams=downstreams)
        )

    async def activity(self, admin: DomainAdmin) -> list[audit.AuditView]:
        async with self.db.read() as session:
            return await audit.of_domain(session, admin.domain_id)


def header_lines(raw: bytes) -> list[tuple[str, str]]:
    """A message's header fields in order, as text, folded lines joined."""
    if not raw:
        return []
    end = raw.find(b"\r\n\r\n")
    head = raw[: end if end >= 0 else HEADER_LIMIT][:HEADER_LIMIT]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head)
    return [(_text(name), _readable(value)) for name, value in parsed.items()]


def _text(value: object) -> str:
    """8-bit header bytes (kept as surrogates by the parser) as UTF-8, never raising."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _readable(value: object) -> str:
    """A header value with RFC 2047 encoded words decoded and folding undone."""
    text = _text(value)
    with contextlib.suppress(HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
        text = str(make_header(decode_header(text)))
    return " ".join(text.split())
