"""False-positive and false-negative reports sent by customers."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from email import message_from_string, policy
from email.errors import MessageError
from email.utils import getaddresses

from mailmoat.db.database import Database
from mailmoat.db.domains_repo import alias_owner
from mailmoat.db.tables import Report
from mailmoat.domain.names import InvalidName, parse_email
from mailmoat.services.caller import Caller
from mailmoat.services.domains import load_domain
from mailmoat.services.errors import InvalidInput, NotFound, Unauthorized

MAX_REPORT_BYTES = 25 * 1024 * 1024


class ReportType(enum.StrEnum):
    FALSE_POSITIVE = "false_positive"
    FALSE_NEGATIVE = "false_negative"


@dataclass(frozen=True, slots=True)
class ReportInput:
    report_type: ReportType
    message_content: str
    ehlo: str | None = None
    mail_from: str | None = None
    rcpt_to: str | None = None
    sending_host: str | None = None


def _header_fields(content: str) -> tuple[str | None, str | None]:
    """Message-ID and first recipient of an RFC 5322 message; 400 if it is not one."""
    if "\x00" in content:
        raise InvalidInput("messageContent must not contain NUL characters")
    if len(content.encode("utf-8", "surrogatepass")) > MAX_REPORT_BYTES:
        raise InvalidInput("messageContent is larger than 25 MiB")
    head = content.lstrip("\r\n").split("\n", 1)[0]
    if ":" not in head or not head.split(":", 1)[0].strip():
        raise InvalidInput("messageContent is not an RFC 5322 message: it must start with headers")
    try:
        message = message_from_string(content, policy=policy.compat32)
    except (MessageError, ValueError) as exc:
        raise InvalidInput(f"messageContent is not an RFC 5322 message: {exc}") from None
    message_id = message.get("Message-ID")
    to = message.get("To")
    return (str(message_id)[:998] if message_id else None, str(to) if to else None)


def _clip(value: str | None, size: int) -> str | None:
    if value is None:
        return None
    if "\x00" in value:
        raise InvalidInput("envelope fields must not contain NUL characters")
    return value[:size]


class ReportService:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def submit(self, caller: Caller, report: ReportInput) -> None:
        message_id, to_header = _header_fields(report.message_content)
        recipient = report.rcpt_to or to_header
        async with self.db.write() as session:
            domain_id = None
            if recipient:
                # The first address, display names and comments removed.
                found = getaddresses([recipient])
                try:
                    address = parse_email(found[0][1]) if found else None
                except InvalidName:
                    address = None
                if address is not None:
                    name = address.domain.ascii
                    # Mail to an alias domain is mail to its domain.
                    canonical = await alias_owner(session, name)
                    if canonical is not None and canonical.customer_id == caller.customer_id:
                        name = canonical.name_ascii
                    try:
                        domain_id = (
                            await load_domain(session, caller, name, foreign=Unauthorized)
                        ).id
                    except NotFound:
                        domain_id = None
            session.add(
                Report(
                    customer_id=caller.customer_id,
                    domain_id=domain_id,
                    report_type=report.report_type.value,
                    message_content=report.message_content,
                    message_id_header=message_id,
                    ehlo=_clip(report.ehlo, 255),
                    mail_from=_clip(report.mail_from, 320),
                    rcpt_to=_clip(report.rcpt_to, 320),
                    sending_host=_clip(report.sending_host, 255),
                )
            )
