"""Incoming statuses, redelivery, and the signing secret of webhook posts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from mailmoat.api.auth import ServicesDep
from mailmoat.api.cloudmailin.auth import PREFIX, AccountCaller
from mailmoat.api.errors import documented
from mailmoat.services.webhook_secrets import SecretView
from mailmoat.services.webhook_statuses import StatusFilter, StatusView

router = APIRouter(prefix=PREFIX, tags=["incoming statuses"])

StatusId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="the message's id")]
Category = Literal["successful", "delayed", "rejected", "max_size"]


class AttemptOut(BaseModel):
    at: datetime
    target: str = Field(description="the URL posted to, without credentials")
    outcome: Literal["delivered", "deferred", "failed", "unreachable"]
    status: int | None = Field(description="HTTP status; null when no answer came")
    reply: str = Field(description="what it meant, in SMTP terms")
    response: str | None = Field(description="the first 2 KB of a failing answer's body")


class StatusOut(BaseModel):
    id: str
    address_id: str | None
    status: int | None = Field(description="HTTP status of the latest attempt")
    status_category: Category
    state: str = Field(description="the message's state in the log")
    to: str
    recipients: list[str]
    from_: str = Field(alias="from", serialization_alias="from")
    subject: str | None
    message_id: str | None = Field(description="the Message-ID header")
    created_at: datetime
    reply: str = Field(description="what mailmoat answered the sending server")
    attempts: list[AttemptOut]

    model_config = {"populate_by_name": True}


def _out(view: StatusView) -> StatusOut:
    return StatusOut(
        id=view.id,
        address_id=view.address_id,
        status=view.status,
        status_category=view.category,
        state=view.state,
        to=view.to,
        recipients=view.recipients,
        from_=view.sender,
        subject=view.subject,
        message_id=view.message_id,
        created_at=view.created_at,
        reply=view.reply,
        attempts=[
            AttemptOut(
                at=a.at,
                target=a.target,
                outcome=a.outcome,
                status=a.status,
                reply=a.reply,
                response=a.response,
            )
            for a in view.attempts
        ],
    )


@router.get(
    "/incoming_statuses",
    response_model=list[StatusOut],
    response_model_by_alias=True,
    responses=documented(400, 401, 403),
)
async def incoming_statuses(
    caller: AccountCaller,
    svc: ServicesDep,
    response: Response,
    address_id: Annotated[str | None, Query(pattern="^[0-9a-f]{20}$")] = None,
    status: Annotated[int | None, Query(ge=100, le=599, description="HTTP status")] = None,
    status_category: Category | None = None,
    to: Annotated[str | None, Query(max_length=320)] = None,
    sender: Annotated[str | None, Query(alias="from", max_length=320)] = None,
    subject: Annotated[str | None, Query(max_length=998, description="a part, any case")] = None,
    since: Annotated[datetime | None, Query(description="received at or after")] = None,
    until: Annotated[datetime | None, Query(description="received before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2_000_000_000)] = 0,
) -> list[StatusOut]:
    """Mail to the account's webhook addresses, newest first, each with every attempt.
    The total is in X-Total-Count."""
    wanted = StatusFilter(
        address_id=address_id,
        status=status,
        category=status_category,
        to=to,
        sender=sender,
        subject=subject,
        since=since,
        until=until,
    )
    views, total = await svc.webhook_statuses.page(caller, wanted, limit, offset)
    response.headers["X-Total-Count"] = str(total)
    return [_out(v) for v in views]


@router.get(
    "/incoming_statuses/{status_id}",
    response_model=StatusOut,
    response_model_by_alias=True,
    responses=documented(401, 403, 404),
)
async def incoming_status(
    caller: AccountCaller, svc: ServicesDep, status_id: StatusId
) -> StatusOut:
    return _out(await svc.webhook_statuses.get(caller, status_id))


@router.post(
    "/incoming_statuses/{status_id}/redeliver",
    response_model=StatusOut,
    response_model_by_alias=True,
    responses=documented(401, 403, 404, 409),
)
async def redeliver(caller: AccountCaller, svc: ServicesDep, status_id: StatusId) -> StatusOut:
    """POST the message again (queued, on the retry schedule): after a webhook refused
    it, failed, or to replay one it received."""
    await svc.webhook_statuses.get(caller, status_id)  # 404 unless a webhook message
    await svc.messages.redeliver(caller, status_id)
    return _out(await svc.webhook_statuses.get(caller, status_id))


# -- signing -------------------------------------------------------------------------


class SecretOut(BaseModel):
    secret: str = Field(description="HMAC-SHA256 key of X-Mailmoat-Signature")
    created_at: datetime
    previous_valid_until: datetime | None = Field(
        description="until then the previous secret signs too (a second v1= value)"
    )


def _secret(view: SecretView) -> SecretOut:
    return SecretOut(
        secret=view.secret,
        created_at=view.created_at,
        previous_valid_until=view.previous_valid_until,
    )


@router.get(
    "/webhook_secret",
    response_model=SecretOut,
    tags=["signing"],
    responses=documented(401, 403),
)
async def webhook_secret(caller: AccountCaller, svc: ServicesDep) -> SecretOut:
    """The secret that signs the account's webhook posts."""
    return _secret(await svc.webhook_secrets.show(caller))


@router.post(
    "/webhook_secret/rotate",
    response_model=SecretOut,
    tags=["signing"],
    responses=documented(401, 403),
)
async def rotate_webhook_secret(caller: AccountCaller, svc: ServicesDep) -> SecretOut:
    """A new secret signs from now on; the previous one signs too for 24 hours."""
    return _secret(await svc.webhook_secrets.rotate(caller))
