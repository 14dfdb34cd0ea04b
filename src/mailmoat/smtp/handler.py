"""The aiosmtpd handler: SMTP commands in, calls on services and the pipeline out."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailmoat import metrics
from mailmoat.domain.names import InvalidName
from mailmoat.domain.policy import Action
from mailmoat.domain.sender_lists import Sender
from mailmoat.pipeline.engine import Evaluation, Incoming, Pipeline, Stamp
from mailmoat.pipeline.headers import summary
from mailmoat.scanners.base import ScannerUnavailable
from mailmoat.services.intake import (
    IntakeService,
    MessageState,
    NewMessage,
    RecipientContext,
    new_message_id,
    state_for,
)
from mailmoat.smtp.protocol import TransactionEnvelope, normalize_newlines

log = logging.getLogger(__name__)

BLOCKLISTED = "550 5.7.1 Sender is blocked by the recipient's blocklist"


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
        self, intake: IntakeService, pipeline: Pipeline, *, max_recipients: int = 100
    ) -> None:
        self.intake = intake
        self.pipeline = pipeline
        self.max_recipients = max_recipients

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: Envelope, proxy_data: object
    ) -> bool:
        """Accept the client address a PROXY-protocol load balancer reports."""
        return True

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd needs it truthy
        envelope.mail_options.extend(options)
        return _reply("MAIL", "250 2.1.0 Sender OK")

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        assert isinstance(envelope, TransactionEnvelope)
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return _reply("RCPT", "452 4.5.3 Too many recipients, send the rest separately")
        try:
            context = await self.intake.recipient(address)
        except InvalidName:
            return _reply("RCPT", "553 5.1.3 Recipient address is not valid")
        except Exception:
            log.exception("recipient lookup failed for %r", address)
            return _reply("RCPT", "451 4.3.0 Temporary failure, try again later")
        if context is None:
            return _reply("RCPT", "550 5.7.1 Relaying denied: recipient domain is not served here")
        screening = context.screen(Sender(_sender(envelope), _client_ip(session)))
        if screening.blocked_by is not None:
            await self._record_refusal(session, envelope, context, screening.blocked_by)
            return _reply("RCPT", BLOCKLISTED)
        if envelope.profile is not None and envelope.profile != screening.profile:
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
        except Exception:
            # Never a 5xx for mailmoat's own failure: the sender would bounce the mail.
            log.exception("message from %s could not be handled", _client_ip(session))
            return _reply("DATA", "451 4.3.0 Temporary local problem, try again later")

    async def _receive(self, session: Session, envelope: TransactionEnvelope) -> str:
        profile = envelope.profile
        assert profile is not None  # aiosmtpd asks for a recipient before DATA
        raw = normalize_newlines(envelope.original_content or b"")
        contexts = envelope.contexts
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
        records = self._records(session, envelope, incoming, evaluation, reply)
        try:
            await self.intake.keep(records)
        except Exception:
            log.exception("could not keep message from %s", incoming.client_ip)
            return _reply("DATA", "451 4.3.0 Temporary failure storing the message, try again")
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
        about = summary(incoming.raw)
        groups: dict[str, list[RecipientContext]] = defaultdict(list)
        for context in envelope.contexts:
            groups[context.domain.id].append(context)
        protocol = _protocol(session, envelope)
        records = []
        for group in groups.values():
            domain = group[0].domain
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
                flag = (domain.spam_header_name, domain.spam_header_value)
                data = self.pipeline.finish(incoming.raw, evaluation, stamp, flag)
            records.append(
                NewMessage(
                    id=message_id,
                    customer_id=domain.customer_id,
                    domain_id=domain.id,
                    domain_name=domain.name_ascii,
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

    async def _record_refusal(
        self, session: Session, envelope: Envelope, context: RecipientContext, rule: str
    ) -> None:
        """A log record for mail refused at RCPT, so the domain's admins see it."""
        now = datetime.now(UTC)
        record = NewMessage(
            id=new_message_id(),
            customer_id=context.domain.customer_id,
            domain_id=context.domain.id,
            domain_name=context.domain.name_ascii,
            received_at=now,
            client_ip=_client_ip(session),
            client_helo=session.host_name or "",
            mail_from=_sender(envelope),
            recipients=[(context.address, context.recipient_id)],
            verdict="unscanned",
            action=Action.BLOCK.value,
            reason=rule,
            state=MessageState.REJECTED,
            reply=BLOCKLISTED,
        )
        try:
            await self.intake.keep([record])
        except Exception:
            log.exception("could not record a refused recipient")
        metrics.MESSAGES.labels("unscanned", Action.BLOCK.value, rule).inc()


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
