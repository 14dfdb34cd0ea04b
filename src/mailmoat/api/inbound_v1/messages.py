"""mailmoat extensions: the message log and the quarantine."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from mailmoat.api.auth import CallerDep, ServicesDep
from mailmoat.api.errors import documented
from mailmoat.services.messages import MessageFilter, MessageView

router = APIRouter(tags=["mailmoat extensions: messages"])

MessageId = Annotated[str, Path(description="message id", pattern="^[0-9a-f]{32}$")]
State = Literal["rejected", "quarantined", "queued", "deferred", "delivered", "failed", "deleted"]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=2_000_000_000)]


class FiredRule(BaseModel):
    name: str
    score: float
    description: str


class RecipientOut(BaseModel):
    address: str
    status: Literal["pending", "delivered", "failed", ""] = Field(
        description="empty when the message is not for delivery (rejected, quarantined…)"
    )
    reply: str | None = Field(description="the downstream's final reply")


class AttemptOut(BaseModel):
    at: datetime
    target: str = Field(description="the server tried, e.g. mx1.example.net.[192.0.2.1]:25")
    outcome: Literal["delivered", "deferred", "failed", "unreachable"]
    reply: str
    recipients: list[str]


class MessageOut(BaseModel):
    id: str
    domain: str
    receivedAt: datetime
    clientIp: str
    clientHelo: str
    mailFrom: str = Field(description="envelope sender; empty for the null sender")
    recipients: list[str]
    size: int
    messageId: str | None = Field(description="the Message-ID header")
    subject: str | None
    verdict: Literal["ham", "spam", "unscanned"]
    action: Literal["accept", "flag", "quarantine", "block"]
    reason: str = Field(description="the rule that decided, e.g. spam-score, domain-safelist")
    score: float | None
    rules: list[FiredRule]
    authenticationResults: str | None
    state: State
    smtpReply: str
    stateChangedAt: datetime
    deliveries: list[RecipientOut] = Field(description="where each recipient stands")
    deliveryAttempts: list[AttemptOut] = Field(description="every attempt, oldest first")
    nextAttemptAt: datetime | None = Field(description="when a deferred message is tried again")
    deletesAt: datetime | None = Field(
        None, description="when retention deletes a quarantined message"
    )
    relatedId: str | None = Field(
        description="for a delivery status notification: the message it reports on"
    )

    @classmethod
    def of(cls, view: MessageView) -> MessageOut:
        return cls(
            id=view.id,
            domain=view.domain,
            receivedAt=view.received_at,
            clientIp=view.client_ip,
            clientHelo=view.client_helo,
            mailFrom=view.mail_from,
            recipients=view.recipients,
            size=view.size,
            messageId=view.message_id_header,
            subject=view.subject,
            verdict=view.verdict,
            action=view.action,
            reason=view.reason,
            score=view.score,
            rules=[FiredRule.model_validate(rule) for rule in view.rules],
            authenticationResults=view.auth_results,
            state=view.state,
            smtpReply=view.reply,
            stateChangedAt=view.state_changed_at,
            deliveries=[
                RecipientOut(address=d.address, status=d.status, reply=d.reply)
                for d in view.deliveries
            ],
            deliveryAttempts=[
                AttemptOut(
                    at=a.at,
                    target=a.target,
                    outcome=a.outcome,
                    reply=a.reply,
                    recipients=a.recipients,
                )
                for a in view.attempts
            ],
            nextAttemptAt=view.next_attempt_at,
            deletesAt=view.quarantine_ends_at,
            relatedId=view.related_id,
        )


class MessagesResponse(BaseModel):
    messages: list[MessageOut]
    total: int


def _page(views: list[MessageView], total: int) -> MessagesResponse:
    return MessagesResponse(messages=[MessageOut.of(v) for v in views], total=total)


@router.get(
    "/domains/{domain}/messages",
    response_model=MessagesResponse,
    responses=documented(400, 401, 403, 404, 503),
)
async def domain_messages(
    caller: CallerDep,
    svc: ServicesDep,
    domain: Annotated[str, Path(max_length=1024)],
    state: State | None = None,
    sender: Annotated[str | None, Query(max_length=320, description="envelope sender")] = None,
    recipient: Annotated[str | None, Query(max_length=320)] = None,
    subject: Annotated[
        str | None, Query(max_length=998, description="a part of the subject, any case")
    ] = None,
    since: Annotated[datetime | None, Query(description="received at or after")] = None,
    until: Annotated[datetime | None, Query(description="received before")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> MessagesResponse:
    """A domain's message log, newest first."""
    wanted = MessageFilter(
        state=state,
        sender=sender,
        recipient=recipient,
        subject=subject,
        since=since,
        until=until,
    )
    return _page(*await svc.messages.for_domain(caller, domain, wanted, limit, offset))


@router.get("/quarantine", response_model=MessagesResponse, responses=documented(400, 401, 503))
async def quarantine(
    caller: CallerDep, svc: ServicesDep, limit: Limit = 50, offset: Offset = 0
) -> MessagesResponse:
    """Every quarantined message of the customer, newest first."""
    return _page(*await svc.messages.quarantine(caller, limit, offset))


@router.get(
    "/messages/{message_id}", response_model=MessageOut, responses=documented(400, 401, 404, 503)
)
async def message(caller: CallerDep, svc: ServicesDep, message_id: MessageId) -> MessageOut:
    return MessageOut.of(await svc.messages.get(caller, message_id))


@router.get(
    "/messages/{message_id}/raw",
    response_class=Response,
    responses={**documented(400, 401, 404, 503), 200: {"content": {"message/rfc822": {}}}},
)
async def raw_message(caller: CallerDep, svc: ServicesDep, message_id: MessageId) -> Response:
    """The message as mailmoat keeps it, with the header fields it added."""
    return Response(await svc.messages.raw(caller, message_id), media_type="message/rfc822")


@router.post(
    "/messages/{message_id}/release",
    response_model=MessageOut,
    responses=documented(400, 401, 404, 409, 503),
)
async def release(caller: CallerDep, svc: ServicesDep, message_id: MessageId) -> MessageOut:
    """Release a quarantined message for delivery."""
    return MessageOut.of(await svc.messages.release(caller, message_id))


@router.post(
    "/messages/{message_id}/redeliver",
    response_model=MessageOut,
    responses=documented(400, 401, 404, 409, 503),
)
async def redeliver(caller: CallerDep, svc: ServicesDep, message_id: MessageId) -> MessageOut:
    """Deliver a failed message again (or a delivered one, to every recipient)."""
    return MessageOut.of(await svc.messages.redeliver(caller, message_id))


@router.delete(
    "/messages/{message_id}", status_code=204, responses=documented(400, 401, 404, 409, 503)
)
async def delete(caller: CallerDep, svc: ServicesDep, message_id: MessageId) -> Response:
    """Delete a quarantined message; its log record stays with state ``deleted``."""
    await svc.messages.delete(caller, message_id)
    return Response(status_code=204)
