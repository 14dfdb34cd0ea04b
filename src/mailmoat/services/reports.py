"""False-positive and false-negative reports sent by customers."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email import message_from_string, policy
from email.errors import MessageError

from sqlalchemy import select

from mailmoat.db.database import Database
from mailmoat.db.tables import Domain, Message, Report
from mailmoat.domain.names import InvalidName, parse_email
from mailmoat.services import audit
from mailmoat.services.caller import Caller
from mailmoat.services.errors import Forbidden, InvalidInput, NotFound, Unauthorized

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


def _check_text(value: str, field: str) -> None:
    """400 unless ``value`` is Unicode text that can be stored: no NUL, no lone surrogate.

    JSON can carry a lone surrogate escape (``\\udcff``, which some clients write for a
    byte that is not UTF-8); the database keeps text as UTF-8, which cannot hold it.
    """
    if "\x00" in value:
        raise InvalidInput(f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{field} is not valid Unicode text: a lone surrogate ({value[exc.start]!a}) "
            f"at character {exc.start}; send the message as UTF-8 text"
        ) from None


def _message_id(content: str) -> str | None:
    """The Message-ID of an RFC 5322 message, whitespace collapsed; 400 if it is not one."""
    _check_text(content, "messageContent")
    if len(content.encode("utf-8", "surrogatepass")) > MAX_REPORT_BYTES:
        raise InvalidInput("messageContent is larger than 25 MiB")
    head = content.lstrip("\r\n").split("\n", 1)[0]
    if ":" not in head or not head.split(":", 1)[0].strip():
        raise InvalidInput("messageContent is not an RFC 5322 message: it must start with headers")
    try:
        message = message_from_string(content, policy=policy.compat32)
    except (MessageError, ValueError) as exc:
        raise InvalidInput(f"messageContent is not an RFC 5322 message: {exc}") from None
    message_id = " ".join(str(message.get("Message-ID") or "").split())
    return message_id[:998] or None


def _clip(value: str | None, size: int) -> str | None:
    if value is None:
        return None
    _check_text(value, "envelope fields")
    return value[:size]


Learner = Callable[[bytes, str, bool], Awaitable[None]]
"""Teaches the spam classifier: (message bytes, classifier scope, is spam)."""


def _matching(
    candidates: list[tuple[Message, str | None]], caller: Caller, rcpt_to: str | None
) -> Message:
    """The caller's record among those with the reported Message-ID.

    Several records can share one Message-ID (the same mail to several domains);
    the envelope recipient, when given, picks among them. Records of a domain
    associated with another API key are not the caller's to report (403).
    """
    mine = [(m, key) for m, key in candidates if m.customer_id == caller.customer_id]
    if not mine:
        raise Unauthorized("the reported message was not received for this customer")
    own = [m for m, key in mine if key is None or key == caller.key_id]
    if not own:
        raise Forbidden("the reported message's domain is associated with a different API key")
    if rcpt_to:
        try:
            domain = parse_email(rcpt_to).domain.ascii
        except InvalidName:
            domain = ""
        for message in own:
            if message.domain_name == domain:
                return message
    return own[0]


class ReportService:
    def __init__(self, database: Database, learner: Learner | None = None) -> None:
        self.db = database
        self.learner = learner

    async def submit(self, caller: Caller, report: ReportInput) -> None:
        """Record a misclassification report about a message mailmoat handled, and learn.

        The message is found by its Message-ID: 404 when mailmoat has no record
        of it, 401 when the only records are another customer's.
        """
        message_id = _message_id(report.message_content)
        if message_id is None:
            raise NotFound("Message not found: the reported message has no Message-ID")
        async with self.db.write() as session:
            rows = await session.execute(
                select(Message, Domain.api_key_id)
                .outerjoin(Domain, Domain.id == Message.domain_id)
                .where(Message.message_id_header == message_id)
                .order_by(Message.received_at.desc())
                .limit(100)
            )
            candidates = [(message, key) for message, key in rows]
            if not candidates:
                raise NotFound("Message not found")
            matched = _matching(candidates, caller, report.rcpt_to)
            session.add(
                Report(
                    customer_id=caller.customer_id,
                    domain_id=matched.domain_id,
                    message_id=matched.id,
                    report_type=report.report_type.value,
                    message_content=report.message_content,
                    message_id_header=message_id,
                    ehlo=_clip(report.ehlo, 255),
                    mail_from=_clip(report.mail_from, 320),
                    rcpt_to=_clip(report.rcpt_to, 320),
                    sending_host=_clip(report.sending_host, 255),
                )
            )
        if self.learner is not None:
            content = report.message_content.encode("utf-8", "surrogateescape")
            await self.learner(
                content, caller.customer_id, report.report_type is ReportType.FALSE_NEGATIVE
            )

    async def file_for_message(
        self, caller: Caller, message_id: str, raw: bytes, report_type: ReportType
    ) -> None:
        """Report a message from the log as misclassified (the console's buttons).

        The caller has already loaded the message, so it is theirs; its content is
        the spooled copy, with the headers mailmoat added.
        """
        async with self.db.write() as session:
            message = await session.get(Message, message_id)
            if message is None:
                raise NotFound(f"message {message_id} does not exist")
            session.add(
                Report(
                    customer_id=caller.customer_id,
                    domain_id=message.domain_id,
                    message_id=message.id,
                    report_type=report_type.value,
                    message_content=raw.decode("utf-8", "replace").replace("\x00", ""),
                    message_id_header=message.message_id_header,
                    ehlo=message.client_helo[:255],
                    mail_from=message.mail_from[:320],
                    sending_host=message.client_ip,
                )
            )
            await audit.record(
                session,
                caller.actor,
                "reported as spam"
                if report_type is ReportType.FALSE_NEGATIVE
                else "reported as not spam",
                domain_id=message.domain_id,
                message_id=message.id,
            )
        if self.learner is not None:
            await self.learner(raw, caller.customer_id, report_type is ReportType.FALSE_NEGATIVE)
