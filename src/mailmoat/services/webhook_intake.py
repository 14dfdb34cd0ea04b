"""Mail to a webhook address in sync mode: POST during DATA; the answer is the reply.

As CloudMailin does: 2xx → 250; 4xx → 554 (permanent, the sender bounces it);
5xx, timeout or no answer → 450 (the sender tries again). A text/plain answer is
carried into the reply. The record keeps the content either way, so that the
message can be redelivered on demand.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mailmoat.db.message_rows import ROUTE_HTTP, NewMessage
from mailmoat.domain.states import MessageState, RecipientStatus
from mailmoat.domain.webhooks import (
    REASON_WEBHOOK_DELAYED,
    REASON_WEBHOOK_POSTING,
    REASON_WEBHOOK_REJECTED,
    WebhookAnswer,
    WebhookEnvelope,
    WebhookPoster,
    WebhookRoute,
)
from mailmoat.services.intake import IntakeService

log = logging.getLogger(__name__)

UNAVAILABLE = "451 4.3.0 Webhook delivery is not available here, try again later"


async def post_during_data(
    intake: IntakeService,
    poster: WebhookPoster | None,
    route: WebhookRoute,
    record: NewMessage,
    envelope: WebhookEnvelope,
) -> str:
    """Keep the message, POST it, record the outcome; return the SMTP reply.

    The record and content are durable before the POST, so that a 250 always has a
    status behind it. Until the outcome is recorded the status reads "delayed": if
    mailmoat stopped in between, the sender, who got no reply, tries again.
    """
    if poster is None or record.data is None:
        return UNAVAILABLE
    decided_by = record.reason  # what filtering said; restored once the webhook took it
    record.state = MessageState.REJECTED
    record.reason = REASON_WEBHOOK_POSTING
    record.reply = "450 4.3.0 posting to the webhook"
    try:
        await intake.keep([record])
    except Exception:
        log.exception("could not keep message %s before posting it", record.id)
        return "451 4.3.0 Temporary failure storing the message, try again"
    answer = await poster.post_now(route, record.data, envelope)
    reply = _settle(record, answer, decided_by)
    try:
        await intake.settle(record)
    except Exception:
        # The webhook has (or refused) the message: the reply stands, and the status
        # stays "delayed" until someone redelivers it.
        log.exception("could not record what the webhook said about message %s", record.id)
    return reply


def _settle(record: NewMessage, answer: WebhookAnswer, decided_by: str) -> str:
    now = datetime.now(UTC)
    if 200 <= answer.code < 300:
        outcome, reply = "delivered", f"250 2.0.0 Ok: delivered to the webhook as {record.id}"
        record.state = MessageState.DELIVERED
        record.reason = decided_by
        record.recipient_status = RecipientStatus.DELIVERED
        record.recipient_reply = answer.reply
    elif 500 <= answer.code < 600:
        outcome, reply = "failed", f"554 {answer.text}"
        record.state = MessageState.REJECTED
        record.reason = REASON_WEBHOOK_REJECTED
        record.recipient_status = RecipientStatus.FAILED
        record.recipient_reply = answer.reply
    else:
        outcome = "deferred" if answer.status is not None else "unreachable"
        reply = f"450 {answer.text}"
        record.state = MessageState.REJECTED
        record.reason = REASON_WEBHOOK_DELAYED
    record.reply = reply
    record.attempts = [
        {
            "attempted_at": now,
            "route": ROUTE_HTTP,
            "target": answer.target[:320],
            "outcome": outcome,
            "reply": answer.reply[:512],
            "recipients": [address for address, _ in record.recipients],
            "http_status": answer.status,
            "response": answer.response,
        }
    ]
    return reply
