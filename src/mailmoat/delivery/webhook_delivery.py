"""Delivering one message to its webhook address: the body, the signature, the POST.

Used by the SMTP front end in sync mode (during DATA, before the reply) and by the
delivery worker for queued mail and redeliveries.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from sqlalchemy import select

from mailmoat.db import webhook_repo
from mailmoat.db.database import Database
from mailmoat.db.queue_repo import Job
from mailmoat.db.tables import Message, MessageRecipient
from mailmoat.delivery.relay import Reply
from mailmoat.delivery.webhook_client import WebhookClient
from mailmoat.delivery.webhook_formats import WebhookEnvelope, build_post
from mailmoat.domain.webhooks import WebhookAnswer, WebhookRoute, fired_rules

_SPF = re.compile(r"\bspf=([a-z]+)(?:[^;]*?\bsmtp\.(?:mailfrom|helo)=([^\s;]+))?", re.IGNORECASE)
_TLS_RECEIVED = re.compile(rb"^Received:.*?\bwith\s+(?:UTF8)?ESMTPS", re.IGNORECASE | re.DOTALL)

NO_ADDRESS = Reply(554, "5.1.1 the webhook address of this message no longer exists")


@dataclass(frozen=True, slots=True)
class SpfSummary:
    result: str
    domain: str


def spf_of(auth_results: str | None) -> SpfSummary:
    """The SPF result and checked domain from mailmoat's Authentication-Results value."""
    found = _SPF.search(auth_results or "")
    if found is None:
        return SpfSummary("none", "")
    checked = found.group(2) or ""
    return SpfSummary(found.group(1).lower(), checked.rpartition("@")[2].lower())


def received_over_tls(raw: bytes) -> bool:
    """Whether the Received field mailmoat put on top says the client used STARTTLS."""
    if not raw.startswith(b"Received:"):
        return False
    lines = raw[:16384].split(b"\r\n")
    field = [lines[0]]
    for line in lines[1:]:  # with its continuation lines, if folded
        if line[:1] not in (b" ", b"\t"):
            break
        field.append(line)
    return _TLS_RECEIVED.match(b" ".join(field)) is not None


class WebhookDelivery:
    def __init__(self, database: Database, client: WebhookClient) -> None:
        self.db = database
        self.client = client

    async def post(
        self, address: WebhookRoute, raw: bytes, envelope: WebhookEnvelope
    ) -> WebhookAnswer:
        # Parsing a large message takes a while: not on the event loop.
        body = await asyncio.to_thread(build_post, address.target_format, raw, envelope)
        return await self.client.post(
            address.target,
            body.content,
            body.content_type,
            message_id=envelope.message_id,
            secrets=await self.signing_secrets(address.customer_id),
        )

    async def post_now(
        self, route: WebhookRoute, raw: bytes, envelope: WebhookEnvelope
    ) -> WebhookAnswer:
        """The SMTP front end's POST (sync mode)."""
        return await self.post(route, raw, envelope)

    async def post_job(self, job: Job, raw: bytes) -> WebhookAnswer | None:
        """POST a queued message; None when its address was deleted meanwhile."""
        async with self.db.read() as session:
            address = (
                await webhook_repo.address_by_id(session, job.address_id)
                if job.address_id
                else None
            )
            message = await session.get(Message, job.message_id)
            recipients = list(
                await session.scalars(
                    select(MessageRecipient.address)
                    .where(MessageRecipient.message_id == job.message_id)
                    .order_by(MessageRecipient.id)
                )
            )
        if address is None or message is None:
            return None
        spf = spf_of(message.auth_results)
        # As in sync mode: the domain SPF is about, even when no check was made.
        spf_domain = spf.domain or (
            message.mail_from.rpartition("@")[2] if message.mail_from else message.client_helo
        )
        envelope = WebhookEnvelope(
            recipients=tuple(recipients),
            sender=message.mail_from,
            helo_domain=message.client_helo,
            remote_ip=message.client_ip,
            spf_result=spf.result,
            spf_domain=spf_domain.lower(),
            tls=received_over_tls(raw),
            tls_cipher=None,
            message_id=message.id,
            verdict=message.verdict,
            score=message.score,
            rules=fired_rules(message.rules),
            authentication_results=message.auth_results,
        )
        return await self.post(address, raw, envelope)

    async def signing_secrets(self, customer_id: str) -> list[str]:
        """Read for every post (one indexed query), so that a rotation applies at once
        in every process."""
        return webhook_repo.signing_keys(await webhook_repo.current_secrets(self.db, customer_id))
