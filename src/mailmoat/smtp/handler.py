"""The aiosmtpd handler: SMTP commands in, calls on services and the pipeline out."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailmoat import metrics
from mailmoat.domain.names import InvalidName, is_utf8
from mailmoat.domain.policy import Action
from mailmoat.domain.sender_lists import Sender
from mailmoat.domain.settings import DEFAULT_SPAM_HEADER_NAME, DEFAULT_SPAM_HEADER_VALUE
from mailmoat.domain.webhooks import REASON_MAX_SIZE, DeliveryMode
from mailmoat.log_throttle import LogThrottle
from mailmoat.pipeline.engine import Evaluation, Incoming, Pipeline, Stamp, sized
from mailmoat.pipeline.headers import REASON_HEADER_SIZE, REASON_MAIL_LOOP, screen, summary
from mailmoat.scanners.base import ScannerUnavailable
from mailmoat.services.intake import (
    ROUTE_HTTP,
    ROUTE_SMTP,
    IntakeService,
    MessageState,
    NewMessage,
    NoSuchRecipient,
    RecipientContext,
    new_message_id,
    state_for,
)
from mailmoat.services.webhook_intake import post_during_data
from mailmoat.smtp.budget import DEFAULT_MEMORY_BUDGET, ByteBudget
from mailmoat.smtp.protocol import TransactionEnvelope
from mailmoat.smtp.webhook_post import envelope_for

log = logging.getLogger(__name__)
failures = LogThrottle(log)  # a read-only database or a full disk fails every message

BLOCKLISTED = "550 5.7.1 Sender is blocked by the recipient's blocklist"
TOO_BIG_FOR_ADDRESS = "552 5.3.4 Message too big for this address"
NO_SUCH_RECIPIENT = "550 5.1.1 No such recipient here"
NEEDS_SMTPUTF8 = "553 5.6.7 Non-ASCII address without SMTPUTF8"
HEADER_REFUSALS = {
    REASON_HEADER_SIZE: "552 5.3.4 Message header too big",
    REASON_MAIL_LOOP: "554 5.4.6 Too many hops, the message is looping",
}


def _client_ip(session: Session) -> str:
    proxy = session.proxy_data
    if proxy is not None and getattr(proxy, "src_addr", None) is not None:
        return str(proxy.src_addr)
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")


def _sender(envelope: Envelope) -> str:
    """The envelope sender, "" for the null sender."""
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else sender


def _reply(command: str, text: str) -> str:
    metrics.SMTP_REPLIES.labels(command, text[:3]).inc()
    return text


class GatewayHandler:
    def __init__(
        self,
        intake: IntakeService,
        pipeline: Pipeline,
        *,
        max_recipients: int = 100,
        budget: ByteBudget | None = None,
        max_header_size: int = 1024 * 1024,
        max_hops: int = 100,
    ) -> None:
        self.intake = intake
        self.pipeline = pipeline
        self.max_recipients = max_recipients
        # Bytes of messages being processed, for every session of this process.
        self.budget = budget or ByteBudget(DEFAULT_MEMORY_BUDGET)
        self.max_header_size = max_header_size
        self.max_hops = max_hops

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: Envelope, proxy_data: object
    ) -> bool:
        """Accept the client address a PROXY-protocol load balancer reports."""
        return True

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """The EHLO reply without AUTH, which aiosmtpd offers once TLS is up: mailmoat
        receives mail for its domains and authenticates nobody."""
        session.host_name = hostname
        return [r for r in responses if not r[4:].upper().startswith("AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not address.isascii():
            if not envelope.smtp_utf8:
                return _reply("MAIL", NEEDS_SMTPUTF8)
            if not is_utf8(address):
                return _reply("MAIL", "553 5.1.7 Sender address is not valid UTF-8")
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd needs it truthy
        envelope.mail_options.extend(options)
        return _reply("MAIL", "250 2.1.0 Sender OK")

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        assert isinstance(envelope, TransactionEnvelope)
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return _reply("RCPT", "452 4.5.3 Too many recipients, send the rest separately")
        if not address.isascii() and not envelope.smtp_utf8:
            return _reply("RCPT", NEEDS_SMTPUTF8)
        try:
            context = await self.intake.recipient(address, envelope.contexts)
        except InvalidName:
            return _reply("RCPT", "553 5.1.3 Recipient address is not valid")
        except NoSuchRecipient:
            return _reply("RCPT", NO_SUCH_RECIPIENT)
        except Exception as exc:
            failures.failed("recipient lookup", exc, "recipient lookup failed for %r", address)
            return _reply("RCPT", "451 4.3.0 Temporary failure, try again later")
        if context is None:
            return _reply("RCPT", "550 5.7.1 Relaying denied: recipient domain is not served here")
        if context.user_email and any(
            c.user_email == context.user_email for c in envelope.contexts
        ):
            # The same mailbox again, perhaps spelt otherwise: it gets the mail once.
            return _reply("RCPT", "250 2.1.5 Recipient OK")
        if context.webhook is not None:
            declared = _declared_size(envelope.mail_options)
            if declared is not None and declared > context.webhook.max_size:
                await self._record_refusal(
                    session, envelope, context, REASON_MAX_SIZE, TOO_BIG_FOR_ADDRESS
                )
                return _reply("RCPT", TOO_BIG_FOR_ADDRESS)
        screening = context.screen(Sender(_sender(envelope), _client_ip(session)))
        if screening.blocked_by is not None:
            await self._record_refusal(session, envelope, context, screening.blocked_by)
            return _reply("RCPT", BLOCKLISTED)
        first = envelope.contexts[0] if envelope.contexts else None
        if (envelope.profile is not None and envelope.profile != screening.profile) or (
            first is not None
            and (first.webhook or context.webhook)
            and first.route_key != context.route_key
        ):
            # One DATA reply must be right for every recipient: a webhook's answer
            # is its own, so a webhook address shares a transaction with no other.
            return _reply("RCPT", "452 4.5.3 Send mail for this recipient in a new transaction")
        envelope.profile = screening.profile
        envelope.contexts.append(context)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return _reply("RCPT", "250 2.1.5 Recipient OK")

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope, TransactionEnvelope)
        try:
            return await self._receive(session, envelope)
        except Exception as exc:
            # Never a 5xx for mailmoat's own failure: the sender would bounce the mail.
            failures.failed(
                "data", exc, "message from %s could not be handled", _client_ip(session)
            )
            return _reply("DATA", "451 4.3.0 Temporary local problem, try again later")

    async def _receive(self, session: Session, envelope: TransactionEnvelope) -> str:
        if envelope.refusal is not None:
            refusal = envelope.refusal
            if not refusal.reason:  # mailmoat's own failure: the sender retries
                return _reply("DATA", refusal.reply)
            return await self.refuse_message(
                session, envelope, refusal.reason, refusal.reply, size=refusal.size
            )
        received = envelope.received
        assert received is not None
        route = envelope.contexts[0].webhook
        if route is not None and received.size > route.max_size:
            return await self.refuse_message(
                session, envelope, REASON_MAX_SIZE, TOO_BIG_FOR_ADDRESS, size=received.size
            )
        # Held as received and as it will be kept: sessions wait for their turn
        # rather than all holding large messages at once.
        async with self.budget.hold(2 * received.size):
            raw = await received.load()
            return await self._process(session, envelope, raw)

    async def _process(self, session: Session, envelope: TransactionEnvelope, raw: bytes) -> str:
        profile = envelope.profile
        assert profile is not None  # aiosmtpd asks for a recipient before DATA
        contexts = envelope.contexts
        route = contexts[0].webhook
        refused = await sized(
            len(raw), screen, raw, max_header_size=self.max_header_size, max_hops=self.max_hops
        )
        if refused is not None:
            return await self.refuse_message(
                session, envelope, refused, HEADER_REFUSALS[refused], size=len(raw)
            )
        incoming = Incoming(
            raw=raw,
            scope=profile.customer_id,
            client_ip=_client_ip(session),
            helo=session.host_name or "",
            mail_from=_sender(envelope),
            recipients=[c.address for c in contexts],
            policy=profile.policy,
            unscanned_reason=profile.unscanned_reason,
        )
        try:
            evaluation = await self.pipeline.evaluate(incoming)
        except ScannerUnavailable as exc:
            log.warning("scanner unavailable: %s", exc)
            return _reply("DATA", "451 4.7.1 Content scanning is unavailable, try again later")
        if evaluation.scan_seconds is not None:
            metrics.SCAN_SECONDS.labels(evaluation.scanner or "none").observe(
                evaluation.scan_seconds
            )
        reply = self._data_reply(evaluation)
        records = await sized(
            len(raw), self._records, session, envelope, incoming, evaluation, reply
        )
        if route is not None and route.mode == DeliveryMode.SYNC and records[0].data is not None:
            webhook_envelope = envelope_for(records[0], incoming, evaluation, session.ssl)
            answer = await post_during_data(
                self.intake, self.intake.webhook_poster, route, records[0], webhook_envelope
            )
            metrics.MESSAGES.labels(
                evaluation.verdict, evaluation.action.value, records[0].reason
            ).inc()
            return _reply("DATA", answer)
        try:
            await self.intake.keep(records, envelope.contexts)
        except Exception as exc:
            failures.failed("keep", exc, "could not keep message from %s", incoming.client_ip)
            return _reply("DATA", "451 4.3.0 Temporary failure storing the message, try again")
        failures.recovered("keep", "keeping messages works again")
        metrics.MESSAGES.labels(
            evaluation.verdict, evaluation.action.value, evaluation.decision.reason
        ).inc(len(records))
        if evaluation.action is Action.BLOCK:
            return _reply("DATA", reply)
        return _reply("DATA", f"{reply} {records[0].id}")

    @staticmethod
    def _data_reply(evaluation: Evaluation) -> str:
        if evaluation.action is not Action.BLOCK:
            return "250 2.0.0 Ok: queued as"
        if evaluation.decision.reason.startswith("dmarc-"):
            return f"550 5.7.1 Rejected by the sender domain's DMARC policy ({_safe(evaluation)})"
        return f"550 5.7.1 Message rejected as spam ({_safe(evaluation)})"

    def _records(
        self,
        session: Session,
        envelope: TransactionEnvelope,
        incoming: Incoming,
        evaluation: Evaluation,
        reply: str,
    ) -> list[NewMessage]:
        now = datetime.now(UTC)
        end = incoming.raw.find(b"\r\n\r\n")
        about = summary(incoming.raw if end < 0 else incoming.raw[: end + 4])  # no body copy
        groups: dict[str, list[RecipientContext]] = defaultdict(list)
        for context in envelope.contexts:
            groups[context.route_key].append(context)
        protocol = _protocol(session, envelope)
        records = []
        for group in groups.values():
            owner = _owner(group[0])
            message_id = new_message_id()
            data = None
            if evaluation.action is not Action.BLOCK:
                stamp = Stamp(
                    message_id,
                    now,
                    incoming.helo,
                    incoming.client_ip,
                    protocol,
                    group[0].address if len(group) == 1 else None,
                )
                data = self.pipeline.finish(incoming.raw, evaluation, stamp, owner.spam_header)
            records.append(
                NewMessage(
                    id=message_id,
                    customer_id=owner.customer_id,
                    domain_id=owner.domain_id,
                    domain_name=owner.domain_name,
                    address_id=owner.address_id,
                    route=owner.route,
                    received_at=now,
                    client_ip=incoming.client_ip,
                    client_helo=incoming.helo,
                    mail_from=incoming.mail_from,
                    recipients=[(c.address, c.recipient_id) for c in group],
                    verdict=evaluation.verdict,
                    action=evaluation.action.value,
                    reason=evaluation.decision.reason,
                    state=state_for(evaluation.action),
                    reply=reply if data is None else f"{reply} {message_id}",
                    size=len(incoming.raw),
                    message_id_header=about.message_id,
                    subject=about.subject,
                    score=evaluation.score,
                    rules=evaluation.rules,
                    auth_results=evaluation.auth.header_value if evaluation.auth else None,
                    data=data,
                )
            )
        return records

    async def refuse_message(
        self, session: Session, envelope: TransactionEnvelope, rule: str, reply: str, size: int = 0
    ) -> str:
        """Refuse a whole message at DATA with ``reply``; ``rule`` is the reason its
        ``rejected`` records give (one per owner, like accepted mail)."""
        groups: dict[str, list[RecipientContext]] = defaultdict(list)
        for context in envelope.contexts:
            groups[context.route_key].append(context)
        await self._keep_refusal(session, envelope, list(groups.values()), rule, reply, size)
        return _reply("DATA", reply)

    async def _record_refusal(
        self,
        session: Session,
        envelope: Envelope,
        context: RecipientContext,
        rule: str,
        reply: str = BLOCKLISTED,
    ) -> None:
        """A log record for a recipient refused at RCPT, so its owner sees it."""
        await self._keep_refusal(session, envelope, [[context]], rule, reply, 0)

    async def _keep_refusal(
        self,
        session: Session,
        envelope: Envelope,
        groups: list[list[RecipientContext]],
        rule: str,
        reply: str,
        size: int,
    ) -> None:
        """Records of mail refused before it was accepted, so that its owners see it."""
        now = datetime.now(UTC)
        records = []
        for group in groups:
            owner = _owner(group[0])
            records.append(
                NewMessage(
                    id=new_message_id(),
                    customer_id=owner.customer_id,
                    domain_id=owner.domain_id,
                    domain_name=owner.domain_name,
                    address_id=owner.address_id,
                    size=size,
                    received_at=now,
                    client_ip=_client_ip(session),
                    client_helo=session.host_name or "",
                    mail_from=_sender(envelope),
                    recipients=[(c.address, c.recipient_id) for c in group],
                    verdict="unscanned",
                    action=Action.BLOCK.value,
                    reason=rule,
                    state=MessageState.REJECTED,
                    reply=reply,
                )
            )
        try:
            await self.intake.keep(records)
        except Exception as exc:
            failures.failed("refusal", exc, "could not record refused mail")
        metrics.MESSAGES.labels("unscanned", Action.BLOCK.value, rule).inc(len(records))


@dataclass(frozen=True, slots=True)
class _Owner:
    """Whose log a record goes to, and how accepted mail travels on."""

    customer_id: str
    domain_id: str | None
    domain_name: str
    address_id: str | None
    route: str
    spam_header: tuple[str, str]


def _owner(context: RecipientContext) -> _Owner:
    if context.webhook is not None:
        return _Owner(
            context.webhook.customer_id,
            None,
            context.address.rpartition("@")[2],
            context.webhook.id,
            ROUTE_HTTP,
            (DEFAULT_SPAM_HEADER_NAME, DEFAULT_SPAM_HEADER_VALUE),
        )
    domain = context.domain
    assert domain is not None
    return _Owner(
        domain.customer_id,
        domain.id,
        domain.name_ascii,
        None,
        ROUTE_SMTP,
        (domain.spam_header_name, domain.spam_header_value),
    )


def _declared_size(options: list[str]) -> int | None:
    """The SIZE= a client declared with MAIL FROM, if any."""
    for option in options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


def _safe(evaluation: Evaluation) -> str:
    detail = evaluation.decision.detail or evaluation.decision.reason
    return "".join(ch for ch in detail if ch.isprintable())[:200]


def _protocol(session: Session, envelope: Any) -> str:
    name = "ESMTP" if session.extended_smtp else "SMTP"
    if getattr(envelope, "smtp_utf8", False):
        name = "UTF8" + name
    if session.ssl is not None:
        name += "S"
    return name
