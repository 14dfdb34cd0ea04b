"""What a webhook post says about the SMTP side of a message (sync mode).

The posting itself, and what its answer makes of the message, is a service rule:
services/webhook_intake.py.
"""

from __future__ import annotations

from typing import Any

from mailmoat.domain.webhooks import WebhookEnvelope, fired_rules
from mailmoat.pipeline.engine import Evaluation, Incoming
from mailmoat.services.intake import NewMessage


def envelope_for(
    record: NewMessage,
    incoming: Incoming,
    evaluation: Evaluation,
    tls: dict[str, Any] | None,
) -> WebhookEnvelope:
    sender = incoming.mail_from
    spf_domain = sender.rpartition("@")[2] if sender else incoming.helo
    cipher = (tls or {}).get("cipher")
    return WebhookEnvelope(
        recipients=tuple(incoming.recipients),
        sender=sender,
        helo_domain=incoming.helo,
        remote_ip=incoming.client_ip,
        spf_result=evaluation.auth.spf if evaluation.auth else "none",
        spf_domain=spf_domain.lower(),
        tls=tls is not None,
        # As CloudMailin fills it: the protocol version ("TLSv1.3"), not the suite.
        tls_cipher=str(cipher[1]) if isinstance(cipher, tuple) and len(cipher) > 1 else None,
        message_id=record.id,
        verdict=evaluation.verdict,
        score=evaluation.score,
        rules=fired_rules(evaluation.rules),
        authentication_results=record.auth_results,
    )
